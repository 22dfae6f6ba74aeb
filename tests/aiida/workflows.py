"""AiiDA processes for the end-to-end test (imported by AiiDA's daemon workers, never by pytest).

* :class:`ParentWorkChain` submits two :class:`ChildWorkChain` processes through the daemon
  (tasks over the broker), waits for both (state-change broadcasts) and adds their results:
  ``total = (x + 1) + (2x + 1) = 3x + 2``.
* :class:`LooperWorkChain` waits for a :class:`GateWorkChain`, which keeps submitting a child
  and waiting for it until its ``gate`` node carries the extra ``open``: a process that stays
  alive and waiting, so ``verdi process pause/play/kill`` (RPCs) can reach it while it runs.
"""

from __future__ import annotations

from aiida.engine import ToContext, WorkChain, calcfunction, while_

from aiida import orm


@calcfunction
def add(x: orm.Int, y: orm.Int) -> orm.Int:
    return orm.Int(x.value + y.value)


class ChildWorkChain(WorkChain):
    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=orm.Int)
        spec.output("result", valid_type=orm.Int)
        spec.outline(cls.compute)

    def compute(self) -> None:
        self.out("result", add(self.inputs.x, orm.Int(1)))


class ParentWorkChain(WorkChain):
    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=orm.Int)
        spec.output("total", valid_type=orm.Int)
        spec.outline(cls.launch_children, cls.collect)

    def launch_children(self):  # type: ignore[no-untyped-def]
        x = self.inputs.x.value
        return ToContext(
            a=self.submit(ChildWorkChain, x=orm.Int(x)),
            b=self.submit(ChildWorkChain, x=orm.Int(2 * x)),
        )

    def collect(self) -> None:
        self.out("total", add(self.ctx.a.outputs.result, self.ctx.b.outputs.result))


class GateWorkChain(WorkChain):
    """Keeps submitting a child and waiting for it (counting rounds on its ``gate`` node)
    until the gate carries the extra ``open``."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("gate", valid_type=orm.Int)
        spec.output("rounds", valid_type=orm.Int)
        spec.outline(cls.setup, while_(cls.closed)(cls.round), cls.finish)

    def setup(self) -> None:
        self.ctx.rounds = 0

    def closed(self) -> bool:
        return not orm.load_node(self.inputs.gate.pk).base.extras.get("open", False)

    def round(self):  # type: ignore[no-untyped-def]
        self.ctx.rounds += 1
        orm.load_node(self.inputs.gate.pk).base.extras.set("rounds", self.ctx.rounds)
        return ToContext(child=self.submit(ChildWorkChain, x=orm.Int(self.ctx.rounds)))

    def finish(self) -> None:
        self.out("rounds", orm.Int(self.ctx.rounds).store())


class LooperWorkChain(WorkChain):
    """Waits for one :class:`GateWorkChain` (which runs until its gate opens): the process
    that is paused, played and killed. What it waits for cannot finish while it is paused
    unless the test opens the gate, so the test never races AiiDA's own handling of a child
    that finishes while its parent is paused."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("gate", valid_type=orm.Int)
        spec.output("rounds", valid_type=orm.Int)
        spec.outline(cls.launch, cls.finish)

    def launch(self):  # type: ignore[no-untyped-def]
        return ToContext(gated=self.submit(GateWorkChain, gate=self.inputs.gate))

    def finish(self) -> None:
        self.out("rounds", self.ctx.gated.outputs.rounds)
