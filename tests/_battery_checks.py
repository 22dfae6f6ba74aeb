"""What the hostile battery (``tests/contract_battery.py``) does with each drawn input, and
what it asserts."""

from __future__ import annotations

import uuid
from typing import Any

import kiwipy
from tests import _battery_inputs as inputs
from tests import contract  # partly initialised while it imports the battery: use at run time
from tests._battery_inputs import Behaviour, Drawn
from tests._battery_rig import (
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
from tests._battery_stage import Stage

__all__ = (
    "check_behaviour",
    "check_body",
    "check_rpc_identifier",
    "check_subscriber_identifier",
    "check_task_queue",
    "expected_kinds",
)


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
    stage = Stage(behaviour, rig.transport.make_future, told.put)
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
    rig: Rig, kind: str, ident: Any, stage: Stage, told: contract.Inbox
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
