"""A battery of hostile input that every transport of the contract suite runs.

:class:`BatteryContract` is a base of :class:`tests.contract.CommunicatorContract`, so each
transport's contract class runs it with its own ``transport`` fixture. It has two parts:

* ``test_battery_known[...]``: each input that broke a transport once (a nasty identifier,
  queue name, body or subscriber behaviour), as a test of its own, so that each shows
  failing or passing by name;
* property-based tests (hypothesis) that draw RPC and subscriber identifiers, task queue
  names, message bodies and subscriber behaviours (``tests/_battery_inputs.py``).

For every case and example (``tests/_battery_checks.py``):

* every call returns, or raises a kiwipy error (or ``ValueError``/``TypeError`` where a name
  or identifier is refused), within :data:`CALL_BOUND` seconds: never hangs, never leaks a
  raw error (``struct.error``, ``UnicodeEncodeError``, ...);
* every future it returns resolves (a result, an exception or cancelled, level by level)
  within :data:`FUTURE_BOUND` seconds, with the outcome the contract promises where it
  promises one (a subscriber's exception reaches the sender as ``RemoteException``;
  ``kiwipy.CancelledError`` cancels the sender's future, as kiwipy 0.9 meant it to);
* a name or identifier that is accepted works, and plain ones (dotted ASCII words) are;
* a control round (one task and one RPC) then succeeds within :data:`CONTROL_BOUND` seconds.

One pair of communicators serves all the examples of a property-based test: each example
must leave it working, which is the point. After a failed example the pair is replaced
(``tests/_battery_rig.py``), so the examples that follow (and hypothesis' shrinking) start
from a working pair again.

Run it alone with ``pytest -k battery``. The examples are derandomized, so a run is
reproducible. Environment knobs, for a deeper search: ``KIWIPY_BATTERY_EXAMPLES`` (examples
per test, default 20, so that the whole suite keeps within its time) and ``KIWIPY_BATTERY_PHASES`` (hypothesis phases, default
``generate``; add ``shrink`` for a minimal failing example, which can take minutes when each
failure is a hang).

Import ``tests.contract``, not this module: the two import each other.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import gc
import os
import sys
from collections.abc import Awaitable, Iterator
from typing import Any, Callable, ClassVar, Optional

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

import kiwipy
from tests import _battery_inputs as inputs
from tests import contract  # partly initialised while it imports this module: use at run time
from tests._battery_checks import (
    check_behaviour,
    check_body,
    check_rpc_identifier,
    check_subscriber_identifier,
    check_task_queue,
)
from tests._battery_inputs import Behaviour, Drawn
from tests._battery_rig import CALL_BOUND, CONTROL_BOUND, FUTURE_BOUND, SEND_REFUSALS, Rig, call

__all__ = ("CALL_BOUND", "CONTROL_BOUND", "FUTURE_BOUND", "KNOWN", "BatteryContract")


def _battery_settings() -> settings:
    phases = os.environ.get("KIWIPY_BATTERY_PHASES", "generate")
    return settings(
        max_examples=int(os.environ.get("KIWIPY_BATTERY_EXAMPLES", "20")),
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase[name.strip()] for name in phases.split(",")],
        report_multiple_bugs=False,
        print_blob=False,
        suppress_health_check=[
            # one communicator pair per test, on purpose (see the module docstring)
            HealthCheck.function_scoped_fixture,
            # each transport's class calls the same test, with its own capabilities
            HealthCheck.differing_executors,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


BATTERY = _battery_settings()


# -- the tests ----------------------------------------------------------------------------------

# -- the known cases: each input that broke a transport once, as a test of its own ----------


class Known:
    """One known case: *run* on a working pair, for transports with *needs*."""

    def __init__(
        self,
        name: str,
        run: Callable[[Rig], Awaitable[None]],
        needs: tuple[str, ...] = (),
        behaviour: Optional[tuple[str, Behaviour]] = None,
    ) -> None:
        self.name = name
        self.run = run
        self.needs = needs
        self.behaviour = behaviour


_IDENTIFIERS = {
    "hash": "#",
    "star": "*",
    "empty": "",
    "e-acute-x200": "é" * 200,  # 400 UTF-8 bytes
    "x256": "x" * 256,
    "surrogate": "\ud800",
    "none": None,
    "int": 7,
    "list": [1, 2],
    "empty-list": [],
}
_QUEUE_NAMES = {
    "empty": lambda rig: "",
    "amq-prefix": lambda rig: "amq.battery",
    "e-acute-x200": lambda rig: rig.transport.name("é" * 200),
    "x300": lambda rig: rig.transport.name("x" * 300),
}
_BEHAVIOURS = {
    "raise-StopIteration": Behaviour(inputs.RAISE, StopIteration),
    "raise-GeneratorExit": Behaviour(inputs.RAISE, GeneratorExit),
    "raise-kiwipy.CancelledError": Behaviour(inputs.RAISE, kiwipy.CancelledError),
    "raise-SystemExit": Behaviour(inputs.RAISE, SystemExit),
    "coroutine-raise-KeyboardInterrupt": Behaviour(inputs.RAISE, KeyboardInterrupt, coroutine=True),
    "coroutine-raise-asyncio.CancelledError": Behaviour(
        inputs.RAISE, asyncio.CancelledError, coroutine=True
    ),
    "raise-unprintable": Behaviour(inputs.RAISE, inputs.UnprintableError),
    "coroutine-raise-unprintable": Behaviour(inputs.RAISE, inputs.UnprintableError, coroutine=True),
    "future-fails-StopIteration": Behaviour(inputs.FUTURE_FAILS, StopIteration, late=True),
    "future-fails-GeneratorExit": Behaviour(inputs.FUTURE_FAILS, GeneratorExit, late=True),
    "future-cancelled": Behaviour(inputs.FUTURE_CANCELLED, late=True),
    "coroutine-future-object": Behaviour(
        inputs.FUTURE_RESULT, value=Drawn("object()", object), coroutine=True, late=True
    ),
    "coroutine-hangs": Behaviour(inputs.HANG, coroutine=True),
    "hangs": Behaviour(inputs.HANG),
}
_BODIES = {
    ("rpc", "x6000000"): Drawn(f"'x' * {inputs.LARGE}", lambda: "x" * inputs.LARGE, True),
    ("broadcast", "object"): Drawn("object()", object),
    ("task", "nested-5000"): Drawn("nested 5000 deep", lambda: inputs.nested(5000)),
}


def _known_cases() -> list[Known]:
    cases = [
        Known(f"{kind}-identifier-{name}", functools.partial(_identifier, kind, ident))
        for kind in ("rpc", "task", "broadcast")
        for name, ident in _IDENTIFIERS.items()
    ]
    cases += [
        Known(f"task-queue-{name}", functools.partial(_queue, name_of), needs=("queues",))
        for name, name_of in _QUEUE_NAMES.items()
    ]
    cases += [
        Known(
            f"{kind}-{name}",
            functools.partial(check_behaviour, kind=kind, behaviour=b),
            behaviour=(kind, b),
        )
        for kind in ("task", "rpc")
        for name, b in _BEHAVIOURS.items()
    ]
    cases += [
        Known(f"{kind}-body-{name}", functools.partial(check_body, kind=kind, body=body))
        for (kind, name), body in _BODIES.items()
    ]
    return cases


async def _identifier(kind: str, ident: Any, rig: Rig) -> None:
    if kind == "rpc":
        await check_rpc_identifier(rig, copy.copy(ident))
    else:
        await check_subscriber_identifier(rig, kind, copy.copy(ident))


async def _queue(name_of: Callable[[Rig], str], rig: Rig) -> None:
    await check_task_queue(rig, name_of(rig))


KNOWN = _known_cases()


def _needs(*capabilities: str) -> Any:
    """Mark a battery test as needing *capabilities*: skipped (with the reason) without."""

    def mark(test: Any) -> Any:
        test.battery_needs = capabilities
        return test

    return mark


class BatteryContract:
    """The battery; a base of :class:`tests.contract.CommunicatorContract`.

    :cvar message_limit: the largest message the transport's communicators in the contract
        suite take (their ``max_message_size``), or ``None`` if they have no limit.
    """

    capabilities: ClassVar[frozenset[str]]
    message_limit: ClassVar[Optional[int]] = None

    @pytest.fixture
    def battery_garbage(self) -> Iterator[None]:
        """Collect the garbage a battery test leaves, once its communicators are closed.

        A failed case leaves futures holding exceptions (kept alive by the failure, which
        pytest keeps in ``sys.last_value``). Collected later, their finalizers log the
        exception, and on Python 3.11 formatting a traceback parses source: if that happens
        while pytest itself parses source to report the next failure, the nested parse
        breaks the outer one's recursion count and ends the whole session with
        ``SystemError: AST constructor recursion depth mismatch``. So they go here."""
        yield
        for name in ("last_type", "last_value", "last_traceback", "last_exc"):
            if hasattr(sys, name):
                setattr(sys, name, None)
        gc.collect()

    @pytest.fixture
    async def battery_rig(
        self,
        battery_garbage: None,  # first: torn down after the transport
        request: pytest.FixtureRequest,
        transport: contract.ContractTransport,
    ) -> Rig:
        for capability in getattr(request.function, "battery_needs", ()):
            if capability not in self.capabilities:
                pytest.skip(f"the transport lacks the {capability!r} capability")
        return Rig(transport, self.capabilities)

    @pytest.mark.parametrize("case", KNOWN, ids=[case.name for case in KNOWN])
    async def test_battery_known(self, battery_rig: Rig, case: Known) -> None:
        for capability in case.needs:
            if capability not in self.capabilities:
                pytest.skip(f"the transport lacks the {capability!r} capability")
        rig = battery_rig
        await rig.ensure_connected()
        if case.behaviour is not None and not _applicable(rig, *case.behaviour):
            pytest.skip("the transport does not promise anything for this behaviour")
        async with rig.example():
            await case.run(rig)

    @BATTERY
    @given(kind=st.sampled_from(("rpc", "task", "broadcast")), ident=inputs.identifiers())
    async def test_battery_identifiers(self, battery_rig: Rig, kind: str, ident: Drawn) -> None:
        async with battery_rig.example() as rig:
            if kind == "rpc":
                await check_rpc_identifier(rig, ident.make())
            else:
                await check_subscriber_identifier(rig, kind, ident.make())

    @_needs("queues")  # contract.QUEUES, not defined yet when this class is
    @BATTERY
    @given(name=inputs.queue_names())
    async def test_battery_task_queue_names(self, battery_rig: Rig, name: Drawn) -> None:
        async with battery_rig.example() as rig:
            value = name.make()
            await check_task_queue(rig, rig.transport.name(value) if name.suffix else value)

    @BATTERY
    @given(kind=st.sampled_from(("task", "rpc", "broadcast")), body=inputs.bodies())
    async def test_battery_bodies(self, battery_rig: Rig, kind: str, body: Drawn) -> None:
        async with battery_rig.example() as rig:
            await check_body(rig, kind, body)

    @BATTERY
    @given(kind=st.sampled_from(("task", "rpc")), behaviour=inputs.behaviours())
    async def test_battery_subscriber_behaviours(
        self, battery_rig: Rig, kind: str, behaviour: Behaviour
    ) -> None:
        rig = battery_rig
        await rig.ensure_connected()
        assume(_applicable(rig, kind, behaviour))
        async with rig.example():
            await check_behaviour(rig, kind, behaviour)

    async def test_battery_message_over_the_limit(self, battery_rig: Rig) -> None:
        if self.message_limit is None:
            pytest.skip("the transport's communicators have no message size limit")
        body = "x" * (self.message_limit + 1)
        async with battery_rig.example() as rig:
            for name, sending in (
                ("task_send", lambda: rig.sender.task_send(body)),
                ("rpc_send", lambda: rig.sender.rpc_send(rig.control_rpc, body)),
                ("broadcast_send", lambda: rig.sender.broadcast_send(body)),
            ):
                sent, error = await call(name, sending(), SEND_REFUSALS)
                assert not sent and isinstance(error, kiwipy.MessageTooLarge), (name, error)


def _applicable(rig: Rig, kind: str, behaviour: Behaviour) -> bool:
    return inputs.applicable(
        behaviour,
        rpc=kind == "rpc",
        isolates=rig.has(contract.ISOLATES),
        awaits=rig.has(contract.AWAITS),
        on_sender_loop=rig.subscribers_on_sender_loop,
    )
