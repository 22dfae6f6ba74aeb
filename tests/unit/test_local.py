"""``LocalCommunicator`` and ``CommunicatorHelper``: kiwipy 0.9's behaviour, bugs B1 and B12
fixed. The shared behaviour is checked by the contract (``test_contract_memory.py``)."""

from __future__ import annotations

from typing import Any, Optional

import pytest

import kiwipy
from kiwipy.communications import CommunicatorHelper
from kiwipy.local import LocalCommunicator


def test_task_identifiers_are_checked_among_tasks() -> None:
    """B1: kiwipy 0.9 looked for duplicate task ids among the RPC subscribers."""
    comm = LocalCommunicator()
    comm.add_rpc_subscriber(lambda _c, msg: msg, "shared-id")
    assert comm.add_task_subscriber(lambda _c, task: task, "shared-id") == "shared-id"
    with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
        comm.add_task_subscriber(lambda _c, task: task, "shared-id")


def test_remote_exception_carries_the_message() -> None:
    """B12: kiwipy 0.9 put ``sys.exc_info()`` in the args instead of the message."""
    comm = LocalCommunicator()

    def fail(_c: Any, task: Any) -> None:
        raise KeyError("missing")

    comm.add_task_subscriber(fail)
    future = comm.task_send("x")
    assert future is not None
    exc = future.exception(0)
    assert isinstance(exc, kiwipy.RemoteException)
    assert exc.args == ("'missing'",)
    assert exc.remote_type == "builtins.KeyError"
    assert exc.remote_traceback is not None and "KeyError: 'missing'" in exc.remote_traceback


def test_task_without_taker_fails_instead_of_hanging() -> None:
    """B12: kiwipy 0.9 returned a future that never completed."""
    comm = LocalCommunicator()
    with pytest.raises(kiwipy.UnroutableError):
        comm.fire_task("nobody").result(0)  # type: ignore[union-attr]

    def reject(_c: Any, task: Any) -> None:
        raise kiwipy.TaskRejected

    comm.add_task_subscriber(reject)
    with pytest.raises(kiwipy.TaskRejected):
        comm.fire_task("unwanted").result(0)  # type: ignore[union-attr]


def test_futures_are_done_on_return() -> None:
    comm = LocalCommunicator()
    comm.add_rpc_subscriber(lambda _c, msg: msg * 2, "double")
    comm.add_task_subscriber(lambda _c, task: task + 1)
    rpc, task = comm.rpc_send("double", 4), comm.task_send(4)
    assert isinstance(rpc, kiwipy.Future) and rpc.done() and rpc.result() == 8
    assert task is not None and task.result() == 5
    assert comm.task_send(4, no_reply=True) is None


def test_broadcasts_use_keyword_arguments() -> None:
    """kiwipy 0.9's local communicator passed everything but the communicator by keyword."""
    comm = LocalCommunicator()
    received: list[dict[str, Any]] = []

    def subscriber(communicator: Any, **message: Any) -> None:
        received.append(message)

    subscriber_: Any = subscriber  # a keyword-only subscriber, not the positional alias

    comm.add_broadcast_subscriber(subscriber_)
    assert comm.broadcast_send("b", sender="s", subject="t", correlation_id=1) is True
    assert received == [{"body": "b", "sender": "s", "subject": "t", "correlation_id": 1}]


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("remove_rpc_subscriber", "Unknown subscriber 'x'"),
        ("remove_task_subscriber", "Unknown subscriber: 'x'"),
        ("remove_broadcast_subscriber", "Broadcast subscriber 'x' unknown"),
    ],
)
def test_unknown_subscriber_messages(remove: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        getattr(LocalCommunicator(), remove)("x")
    assert str(info.value) == message


def test_close() -> None:
    with LocalCommunicator() as comm:
        comm.add_task_subscriber(lambda _c, task: task)
    assert comm.is_closed()
    comm.close()
    with pytest.raises(kiwipy.CommunicatorClosed):
        comm.task_send(1)


class Recording(CommunicatorHelper):
    """A helper subclass as clients write them: it only implements the sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Any] = []

    def task_send(self, task: Any, no_reply: bool = False) -> Optional[kiwipy.Future[Any]]:
        self.sent.append(task)
        return self.fire_task(task, no_reply)

    def rpc_send(self, recipient_id: Any, msg: Any) -> kiwipy.Future[Any]:
        self.sent.append(msg)
        return self.fire_rpc(recipient_id, msg)

    def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        self.sent.append(body)
        return self.fire_broadcast(body, sender, subject, correlation_id)


def test_helper_subclass() -> None:
    comm = Recording()
    assert isinstance(comm, kiwipy.Communicator)
    comm.add_task_subscriber(lambda c, task: (c is comm, task))
    ident = comm.add_rpc_subscriber(lambda _c, msg: -msg)
    filtered: list[Any] = []
    comm.add_broadcast_subscriber(
        kiwipy.BroadcastFilter(lambda *args: filtered.append(args[1:4]), subject="keep.*")
    )
    assert comm.fire_task("t").result() == (True, "t")  # type: ignore[union-attr]
    assert comm.task_send("t") is not None
    assert comm.rpc_send(ident, 3).result() == -3
    comm.broadcast_send("dropped", subject="drop.it")
    comm.broadcast_send("kept", sender="me", subject="keep.it")
    assert filtered == [("kept", "me", "keep.it")]
    assert comm.sent == ["t", 3, "dropped", "kept"]
    with pytest.raises(kiwipy.UnroutableError):
        comm.rpc_send("nobody", None)
    comm.close()
    with pytest.raises(kiwipy.CommunicatorClosed):
        comm.add_rpc_subscriber(lambda _c, msg: msg)


def test_a_local_handler_sees_the_deadline_of_its_call() -> None:
    """LocalCommunicator runs a call at once, so it never starts late; its subscriber sees
    the deadline all the same (issue 16)."""
    comm = LocalCommunicator()
    ident = comm.add_rpc_subscriber(lambda _c, msg: kiwipy.deadline())
    comm.add_task_subscriber(lambda _c, task: kiwipy.deadline())
    left = comm.rpc_send(ident, None, timeout=10).result()
    assert left is not None and 9 < left <= 10
    left = comm.task_send(None, timeout=10).result()  # type: ignore[union-attr]
    assert left is not None and 9 < left <= 10
    assert comm.rpc_send(ident, None).result() is None
    with pytest.raises(ValueError, match="timeout"):
        comm.rpc_send(ident, None, timeout=0)
    comm.close()
