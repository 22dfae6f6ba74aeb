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

import asyncio
import contextlib
import inspect
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Optional

import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

import kiwipy
from tests import _battery_inputs as inputs
from tests import contract
from tests._battery_inputs import Behaviour, Drawn, fixed

__all__ = ("CALL_BOUND", "CONTROL_BOUND", "FUTURE_BOUND", "BatteryContract")

#: Seconds a call (a send, adding or removing a subscriber, ``task_queue``) may take.
CALL_BOUND = 5.0
#: Seconds each level of a returned future may take to resolve.
FUTURE_BOUND = 5.0
#: Seconds the control round (one task, one RPC) may take after an example.
CONTROL_BOUND = 3.0

#: What a call may raise to refuse a name or an identifier.
REFUSALS = (kiwipy.KiwiError, ValueError, TypeError)
#: What a send may raise to refuse a body.
SEND_REFUSALS = (kiwipy.KiwiError,)


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


# -- bounded calls and outcomes ----------------------------------------------------------------


async def call(what: str, awaitable: Any, refusals: tuple[type[BaseException], ...]) -> Any:
    """:returns: ``(True, result)``, or ``(False, error)`` if it raised one of *refusals*.
    Fails the example if it takes over :data:`CALL_BOUND` seconds or raises anything else."""
    try:
        return True, await asyncio.wait_for(awaitable, CALL_BOUND)
    except refusals as exc:
        return False, exc
    except TimeoutError as exc:  # asyncio's, or the thread facade's kiwipy.TimeoutError
        raise AssertionError(f"{what}: no answer within {CALL_BOUND} s ({exc!r})") from exc
    except BaseException as exc:
        allowed = ", ".join(refusal.__name__ for refusal in refusals)
        why = f", not a refusal ({allowed})" if refusals else ""
        raise AssertionError(f"{what} raised {exc!r}{why}") from exc


async def must(what: str, awaitable: Any) -> Any:
    """:returns: what *awaitable* gives; fails the example if it raises or takes too long."""
    ok, got = await call(what, awaitable, ())
    assert ok
    return got


class Outcome:
    """How a (nested) future ended: ``kind`` is ``'result'``, ``'error'`` or ``'cancelled'``."""

    def __init__(self, kind: str, value: Any = None) -> None:
        self.kind = kind
        self.value = value

    def __repr__(self) -> str:
        return f"Outcome({self.kind}, {self.value!r})"[:300]


async def outcome_of(what: str, future: Any) -> Outcome:
    """Follow *future* level by level (a future resolving to a future) to its end; fails the
    example if a level does not resolve within :data:`FUTURE_BOUND` seconds."""
    level = 1
    while True:
        done, _ = await asyncio.wait({future}, timeout=FUTURE_BOUND)
        assert done, f"{what}: level {level} of the future not resolved in {FUTURE_BOUND} s"
        if future.cancelled():
            return Outcome("cancelled")
        if future.exception() is not None:
            return Outcome("error", future.exception())
        if not asyncio.isfuture(future.result()):
            return Outcome("result", future.result())
        future, level = future.result(), level + 1


async def send_natively(view: Any, name: str, *args: Any) -> Any:
    """``view.native.<name>(*args)``, bounded: the communicator's own future (a
    ``concurrent.futures.Future`` for a blocking communicator), which the sender may cancel."""
    method = getattr(view.native, name)
    if inspect.iscoroutinefunction(method):
        return await must(name, method(*args))
    return await must(name, asyncio.to_thread(method, *args))


def _echo(_comm: Any, msg: Any) -> Any:
    return msg


def _control_task(_comm: Any, task: Any) -> Any:
    # Also answers what earlier examples left in the queue; only the token matters.
    return f"control {task}" if isinstance(task, str) else None


# -- the communicator pair ----------------------------------------------------------------------


class Rig:
    """The communicators one battery test uses across its examples: a sender and a worker
    (the same communicator where the transport shares nothing between communicators)."""

    def __init__(self, transport: contract.ContractTransport, capabilities: frozenset[str]):
        self.transport = transport
        self.capabilities = capabilities
        self.sender: Any = None
        self.worker: Any = None
        self.control_rpc = ""
        self.broken = True
        self._serial = 0

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def unique(self, what: str) -> str:
        """:returns: a task queue name or RPC identifier no other example of the test uses."""
        self._serial += 1
        return self.transport.name(f"battery-{what}{self._serial}")

    @property
    def subscribers_on_sender_loop(self) -> bool:
        """Whether subscribers run on the test's loop (an asyncio communicator)."""
        return inspect.iscoroutinefunction(self.worker.native.rpc_send)

    async def ensure_connected(self) -> None:
        """Make a working pair if there is none (the last example broke it)."""
        if self.broken:
            await self._replace()
            self.broken = False

    @contextlib.asynccontextmanager
    async def example(self) -> AsyncIterator[Rig]:
        """One example: a working pair before it, and the control round after it."""
        await self.ensure_connected()
        self.broken = True  # until the control round says otherwise
        yield self
        await asyncio.wait_for(self.control_round(), CONTROL_BOUND)
        self.broken = False

    async def control_round(self) -> None:
        """One task and one RPC, answered."""
        token = uuid.uuid4().hex
        ident = await must(
            "control add_task_subscriber", self.worker.add_task_subscriber(_control_task)
        )
        task = await must("control task_send", self.sender.task_send(token))
        assert await contract.settle(task, CONTROL_BOUND) == f"control {token}"
        await must("control remove_task_subscriber", self.worker.remove_task_subscriber(ident))
        answer = await must("control rpc_send", self.sender.rpc_send(self.control_rpc, token))
        assert await contract.settle(answer, CONTROL_BOUND) == token

    async def _replace(self) -> None:
        for old in {id(v): v for v in (self.sender, self.worker) if v is not None}.values():
            with contextlib.suppress(BaseException):  # it failed an example: close what can be
                await asyncio.wait_for(old.close(), CALL_BOUND)
        self.worker = await asyncio.wait_for(self.transport.connect(), CALL_BOUND)
        self.sender = self.worker
        if self.has(contract.SHARED):
            self.sender = await asyncio.wait_for(self.transport.connect(), CALL_BOUND)
        self.control_rpc = await must(
            "add the control RPC subscriber",
            self.worker.add_rpc_subscriber(_echo, self.unique("control")),
        )


# -- what each example does -----------------------------------------------------------------


async def check_rpc_identifier(rig: Rig, ident: Any) -> None:
    """An identifier is refused at once, or it works (and nobody else's calls reach it)."""
    added, got = await call(
        f"add_rpc_subscriber(echo, {ident!r})",
        rig.worker.add_rpc_subscriber(_echo, ident),
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
    ident = await must("add_task_subscriber", queue.add_task_subscriber(_echo))
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
        ident = await must("add_task_subscriber", rig.worker.add_task_subscriber(_echo))
        sending = rig.sender.task_send(body.make())
    else:
        ident = await must(
            "add_rpc_subscriber", rig.worker.add_rpc_subscriber(_echo, rig.unique("body"))
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
