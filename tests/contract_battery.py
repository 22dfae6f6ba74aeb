"""A battery of hostile input that every transport of the contract suite runs.

:class:`BatteryContract` is a base of :class:`tests.contract.CommunicatorContract`, so each
transport's contract class runs it with its own ``transport`` fixture. Its tests are
property-based (hypothesis): they draw RPC and subscriber identifiers, task queue names,
message bodies and subscriber behaviours (``tests/_battery_inputs.py``), and assert for each
example that

* every call returns, or raises a kiwipy error (or ``ValueError``/``TypeError`` where a name
  or identifier is refused), within :data:`CALL_BOUND` seconds: never hangs, never leaks a
  raw error (``struct.error``, ``UnicodeEncodeError``, ...);
* every future it returns resolves (a result, an exception or cancelled, level by level)
  within :data:`FUTURE_BOUND` seconds, with the outcome the contract promises where it
  promises one (a subscriber's exception reaches the sender as ``RemoteException``);
* a name or identifier that is accepted works, and plain ones (dotted ASCII words) are;
* a control round (one task and one RPC) then succeeds within :data:`CONTROL_BOUND` seconds.

One pair of communicators serves all the examples of a test: each example must leave it
working, which is the point. After a failed example the pair is replaced, so the examples
that follow (and hypothesis' shrinking) start from a working pair again.

Run it alone with ``pytest -k battery``. The examples are derandomized, so a run is
reproducible. Environment knobs, for a deeper search: ``KIWIPY_BATTERY_EXAMPLES`` (examples
per test, default 30) and ``KIWIPY_BATTERY_PHASES`` (hypothesis phases, default
``explicit,generate``; add ``shrink`` for a minimal failing example, which can take minutes
when each failure is a hang; drop ``explicit`` to look past the known cases).

Import ``tests.contract``, not this module: the two import each other.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, ClassVar, Optional

import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

import kiwipy
from tests import _battery_inputs as inputs
from tests import contract
from tests._battery_inputs import Behaviour, Drawn, fixed
from tests._battery_rig import (
    CALL_BOUND,
    CONTROL_BOUND,
    FUTURE_BOUND,
    REFUSALS,
    SEND_REFUSALS,
    Rig,
    call,
    echo,
    must,
    outcome_of,
    send_natively,
)

__all__ = ("CALL_BOUND", "CONTROL_BOUND", "FUTURE_BOUND", "BatteryContract")


def _battery_settings() -> settings:
    phases = os.environ.get("KIWIPY_BATTERY_PHASES", "explicit,generate")
    return settings(
        max_examples=int(os.environ.get("KIWIPY_BATTERY_EXAMPLES", "30")),
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


# -- what each example does -----------------------------------------------------------------


async def check_rpc_identifier(rig: Rig, ident: Any) -> None:
    """An identifier is refused at once, or it works (and nobody else's calls reach it)."""
    added, got = await call(
        f"add_rpc_subscriber(echo, {ident!r})",
        rig.worker.add_rpc_subscriber(echo, ident),
        REFUSALS,
    )
    if not added:
        assert not inputs.is_plain_name(ident), f"a plain identifier was refused: {got!r}"
        sent, answer = await call("rpc_send to it", rig.sender.rpc_send(ident, "ping"), REFUSALS)
        assert not sent, f"rpc_send to a refused identifier was sent: {answer!r}"
        return
    future = await must("rpc_send", rig.sender.rpc_send(got, "ping"))
    outcome = await outcome_of("rpc_send", future)
    assert (outcome.kind, outcome.value) == ("result", "ping"), outcome
    # nobody holds these: an identifier must not catch calls addressed to others (AMQP
    # wildcards '#' and '*' in a binding would)
    for nobody in (rig.transport.name("nobody"), f"nobody{uuid.uuid4().hex}"):
        sent, error = await call(f"rpc_send({nobody!r})", rig.sender.rpc_send(nobody, 1), REFUSALS)
        assert not sent and isinstance(error, kiwipy.UnroutableError), (nobody, error)
    await must("remove_rpc_subscriber", rig.worker.remove_rpc_subscriber(got))
    sent, error = await call("rpc_send after removal", rig.sender.rpc_send(got, 1), REFUSALS)
    assert not sent and isinstance(error, kiwipy.UnroutableError), error


async def check_subscriber_identifier(rig: Rig, kind: str, ident: Any) -> None:
    """A task or broadcast subscriber identifier is refused at once, or its subscriber gets
    messages and can be removed."""
    heard = contract.Inbox()

    def hear(_comm: Any, body: Any, *_args: Any, **_kwargs: Any) -> Any:
        heard.put(body)
        return body

    add = getattr(rig.worker, f"add_{kind}_subscriber")
    added, got = await call(f"add_{kind}_subscriber({ident!r})", add(hear, ident), REFUSALS)
    if not added:
        assert not inputs.is_plain_name(ident), f"a plain identifier was refused: {got!r}"
        return
    if kind == "task":
        outcome = await outcome_of(
            "task_send", await must("task_send", rig.sender.task_send("ping"))
        )
        assert (outcome.kind, outcome.value) == ("result", "ping"), outcome
    else:
        assert await must("broadcast_send", rig.sender.broadcast_send("ping"))
        assert await heard.wait_for(1, FUTURE_BOUND) == ["ping"]
    await must(f"remove_{kind}_subscriber", getattr(rig.worker, f"remove_{kind}_subscriber")(got))


async def check_task_queue(rig: Rig, name: Any) -> None:
    """A task queue name is refused at once, or the queue works."""
    made, queue = await call(f"task_queue({name!r})", rig.worker.task_queue(name), REFUSALS)
    if not made:
        assert not inputs.is_plain_name(name), f"a plain queue name was refused: {queue!r}"
        return
    ident = await must("add_task_subscriber", queue.add_task_subscriber(echo))
    sending = await must("the sender's task_queue", rig.sender.task_queue(name))
    outcome = await outcome_of("task_send", await must("task_send", sending.task_send("ping")))
    assert (outcome.kind, outcome.value) == ("result", "ping"), outcome
    await must("remove_task_subscriber", queue.remove_task_subscriber(ident))


async def check_body(rig: Rig, kind: str, body: Drawn) -> None:
    """A body is refused at once with a kiwipy error, or it arrives (plain data unchanged)."""
    if kind == "broadcast":
        await _check_broadcast_body(rig, body)
        return
    if kind == "task":
        ident = await must("add_task_subscriber", rig.worker.add_task_subscriber(echo))
        sending = rig.sender.task_send(body.make())
    else:
        ident = await must(
            "add_rpc_subscriber", rig.worker.add_rpc_subscriber(echo, rig.unique("body"))
        )
        sending = rig.sender.rpc_send(ident, body.make())
    sent, future = await call(f"{kind}_send", sending, SEND_REFUSALS)
    if not sent:
        too_large = isinstance(future, kiwipy.MessageTooLarge)
        assert not body.plain or too_large, f"plain data refused: {future!r}"
    else:
        outcome = await outcome_of(f"{kind}_send", future)
        if body.plain:
            assert (outcome.kind, outcome.value) == ("result", body.make()), outcome
        else:
            assert outcome.kind == "result" or isinstance(outcome.value, kiwipy.KiwiError), outcome
    remove = (
        rig.worker.remove_task_subscriber if kind == "task" else rig.worker.remove_rpc_subscriber
    )
    await must(f"remove the {kind} subscriber", remove(ident))


async def _check_broadcast_body(rig: Rig, body: Drawn) -> None:
    heard = contract.Inbox()
    token = uuid.uuid4().hex

    def hear(_comm: Any, body: Any, sender: Any, subject: Any, correlation_id: Any) -> None:
        # named parameters: kiwipy 0.9's LocalCommunicator passes them by keyword
        heard.put(correlation_id)

    ident = await must("add_broadcast_subscriber", rig.worker.add_broadcast_subscriber(hear))
    sent, error = await call(
        "broadcast_send", rig.sender.broadcast_send(body.make(), None, None, token), SEND_REFUSALS
    )
    if sent:
        assert token in await heard.wait_for(1, FUTURE_BOUND)
    else:
        assert not body.plain or isinstance(error, kiwipy.MessageTooLarge), error
    await must("remove_broadcast_subscriber", rig.worker.remove_broadcast_subscriber(ident))


def expected_kinds(behaviour: Behaviour, isolates: bool) -> tuple[str, ...]:
    """:returns: the outcome kinds the contract allows for a subscriber's *behaviour*.

    A transport that isolates subscribers reports any exception as ``RemoteException``;
    ``kiwipy.CancelledError`` (kiwipy 0.9's way for a subscriber to cancel) and a returned
    future that ends cancelled cancel the sender's future. Without isolation only the
    resolution itself is promised."""
    if not isolates:
        return ("result", "error", "cancelled")
    cancelled = behaviour.error is kiwipy.CancelledError
    if behaviour.action in (inputs.RAISE, inputs.FUTURE_FAILS):
        return ("cancelled",) if cancelled else ("error",)
    if behaviour.action == inputs.FUTURE_CANCELLED:
        return ("cancelled",)
    assert behaviour.value is not None
    return ("result",) if behaviour.value.plain else ("result", "error")


async def check_behaviour(rig: Rig, kind: str, behaviour: Behaviour) -> None:
    """A subscriber doing *behaviour*: the sender's future ends as the contract says."""
    told = contract.Inbox()
    stage = inputs.Stage(behaviour, rig.transport.make_future, told.put)
    if kind == "task":
        ident = await must(
            "add_task_subscriber", rig.worker.add_task_subscriber(stage.subscriber())
        )
    else:
        ident = await must(
            "add_rpc_subscriber",
            rig.worker.add_rpc_subscriber(stage.subscriber(), rig.unique("do")),
        )
    try:
        if behaviour.action == inputs.HANG:
            await _cancel_while_hanging(rig, kind, ident, told)
        else:
            await _check_outcome(rig, kind, ident, stage, told)
    finally:
        stage.gate.release()
    remove = (
        rig.worker.remove_task_subscriber if kind == "task" else rig.worker.remove_rpc_subscriber
    )
    await must(f"remove the {kind} subscriber", remove(ident))


def _send(rig: Rig, kind: str, ident: Any, msg: Any) -> Any:
    return rig.sender.task_send(msg) if kind == "task" else rig.sender.rpc_send(ident, msg)


async def _check_outcome(
    rig: Rig, kind: str, ident: Any, stage: inputs.Stage, told: contract.Inbox
) -> None:
    future = await must(f"{kind}_send", _send(rig, kind, ident, "go"))
    if stage.behaviour.late:
        returned = await _told(told, "returned")
        stage.complete_late(returned)
    outcome = await outcome_of(f"{kind}_send", future)
    allowed = expected_kinds(stage.behaviour, rig.has(contract.ISOLATES))
    assert outcome.kind in allowed, f"{outcome} (expected {' or '.join(allowed)})"
    if outcome.kind == "error" and rig.has(contract.ISOLATES):
        assert isinstance(outcome.value, kiwipy.RemoteException), outcome
    value = stage.behaviour.value
    if outcome.kind == "result" and value is not None and value.plain:
        assert outcome.value == value.make(), outcome


async def _told(told: contract.Inbox, what: str) -> Any:
    """:returns: what the subscriber told with *what* (see :class:`inputs.Stage`)."""
    try:
        items = await told.wait_for(2 if what == "returned" else 1, FUTURE_BOUND)
    except TimeoutError:
        raise AssertionError(f"the subscriber has not {what} within {FUTURE_BOUND} s") from None
    return dict(items)[what]


async def _cancel_while_hanging(rig: Rig, kind: str, ident: Any, told: contract.Inbox) -> None:
    native = "task_send" if kind == "task" else "rpc_send"
    args = ("hang",) if kind == "task" else (ident, "hang")
    future = await send_natively(rig.sender, native, *args)
    await _told(told, "called")
    future.cancel()
    assert future.done(), "the sender cancelled its future, which is still pending"


# -- the tests ----------------------------------------------------------------------------------

_NASTY_IDENTIFIERS = ("#", "*", "", "é" * 200, "x" * 256, "\ud800", None, 7, [1, 2])


def _needs(*capabilities: str) -> Any:
    """Mark a battery test as needing *capabilities*: skipped (with the reason) without."""

    def mark(test: Any) -> Any:
        test.battery_needs = capabilities
        return test

    return mark


def _known_behaviours() -> Any:
    """Explicit examples: the behaviours that broke a transport once, as task and RPC."""
    known = [
        Behaviour(inputs.RAISE, StopIteration),
        Behaviour(inputs.RAISE, GeneratorExit),
        Behaviour(inputs.RAISE, kiwipy.CancelledError),
        Behaviour(inputs.RAISE, KeyboardInterrupt, coroutine=True),
        Behaviour(inputs.FUTURE_FAILS, StopIteration, late=True),
        Behaviour(inputs.FUTURE_CANCELLED, late=True),
        Behaviour(inputs.HANG, coroutine=True),
    ]

    def decorate(test: Any) -> Any:
        for behaviour in reversed(known):
            for kind in ("rpc", "task"):
                test = example(kind=kind, behaviour=behaviour)(test)
        return test

    return decorate


def _examples(**fixed_args: Any) -> Any:
    """Explicit examples: one per nasty identifier for each of *fixed_args*' kinds."""

    def decorate(test: Any) -> Any:
        for ident in reversed(_NASTY_IDENTIFIERS):
            test = example(ident=fixed(ident), **fixed_args)(test)
        return test

    return decorate


class BatteryContract:
    """The battery; a base of :class:`tests.contract.CommunicatorContract`.

    :cvar message_limit: the largest message the transport's communicators in the contract
        suite take (their ``max_message_size``), or ``None`` if they have no limit.
    """

    capabilities: ClassVar[frozenset[str]]
    message_limit: ClassVar[Optional[int]] = None

    @pytest.fixture
    async def battery_rig(
        self, request: pytest.FixtureRequest, transport: contract.ContractTransport
    ) -> Rig:
        for capability in getattr(request.function, "battery_needs", ()):
            if capability not in self.capabilities:
                pytest.skip(f"the transport lacks the {capability!r} capability")
        return Rig(transport, self.capabilities)

    @BATTERY
    @given(kind=st.sampled_from(("rpc", "task", "broadcast")), ident=inputs.identifiers())
    @_examples(kind="rpc")
    @_examples(kind="broadcast")
    async def test_battery_identifiers(self, battery_rig: Rig, kind: str, ident: Drawn) -> None:
        async with battery_rig.example() as rig:
            if kind == "rpc":
                await check_rpc_identifier(rig, ident.make())
            else:
                await check_subscriber_identifier(rig, kind, ident.make())

    @_needs("queues")  # contract.QUEUES, not defined yet when this class is
    @BATTERY
    @given(name=inputs.queue_names())
    @example(name=fixed(""))
    @example(name=fixed("amq.battery"))
    @example(name=Drawn("<namespace>.'é' * 200", lambda: "é" * 200, suffix=True))
    async def test_battery_task_queue_names(self, battery_rig: Rig, name: Drawn) -> None:
        async with battery_rig.example() as rig:
            value = name.make()
            await check_task_queue(rig, rig.transport.name(value) if name.suffix else value)

    @BATTERY
    @given(kind=st.sampled_from(("task", "rpc", "broadcast")), body=inputs.bodies())
    @example(kind="rpc", body=Drawn(f"'x' * {inputs.LARGE}", lambda: "x" * inputs.LARGE, True))
    async def test_battery_bodies(self, battery_rig: Rig, kind: str, body: Drawn) -> None:
        async with battery_rig.example() as rig:
            await check_body(rig, kind, body)

    @BATTERY
    @given(kind=st.sampled_from(("task", "rpc")), behaviour=inputs.behaviours())
    @_known_behaviours()
    async def test_battery_subscriber_behaviours(
        self, battery_rig: Rig, kind: str, behaviour: Behaviour
    ) -> None:
        rig = battery_rig
        await rig.ensure_connected()
        assume(
            inputs.applicable(
                behaviour,
                rpc=kind == "rpc",
                isolates=rig.has(contract.ISOLATES),
                awaits=rig.has(contract.AWAITS),
                on_sender_loop=rig.subscribers_on_sender_loop,
            )
        )
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
