"""Interoperability with kiwipy 0.9 when both sides run in testing mode (issue 11, item 10):
tasks, RPCs and broadcasts in both directions, with this library's default options.

kiwipy 0.9 in testing mode declares its task queue transient (7-day TTL, 10 s expiry) and its
exchanges auto-deleting, and redeclares them on connect; this library declares exactly the
same in testing mode, so whichever side comes first, the other's declarations succeed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import kiwipy
from kiwipy import rmq

from .harness import Peer09, connect_ours

# _prerequisites: the autouse fixture that requires RabbitMQ and the kiwipy 0.9 venv
from .test_interop import URL, WAIT, _echo, _prerequisites  # noqa: F401

pytestmark = [pytest.mark.interop, pytest.mark.integration]


@pytest.fixture
def prefix() -> str:
    # testing mode: the exchanges auto-delete and the task queue expires on its own
    return f"kiwitest.interop-testing.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def ours(prefix: str) -> Iterator[rmq.RmqThreadCommunicator]:
    comm = connect_ours(URL, prefix, testing_mode=True)
    yield comm
    comm.close()


def peer(role: str, prefix: str, **kwargs: Any) -> Peer09:
    return Peer09(role, url=URL, exchange_prefix=prefix, testing_mode=True, **kwargs)


def test_tasks_both_ways_we_declare_first(prefix: str, ours: rmq.RmqThreadCommunicator) -> None:
    ident = ours.add_task_subscriber(_echo)  # we declare the task queue; 0.9 redeclares it
    with peer("send-tasks", prefix, bodies=[1, "two"]) as sender:
        results = sender.wait_for_count("result", 2, WAIT)
    assert [event["result"] for event in results] == [
        {"echo": 1, "by": "kiwipy-new"},
        {"echo": "two", "by": "kiwipy-new"},
    ]
    ours.remove_task_subscriber(ident)
    with peer("worker", prefix) as worker:
        worker.wait_for("ready")
        future = ours.task_send("to 0.9")
        assert future is not None
        assert future.result(WAIT) == {"echo": "to 0.9", "by": "kiwipy-0.9"}


def test_tasks_both_ways_kiwipy09_declares_first(
    prefix: str, ours: rmq.RmqThreadCommunicator
) -> None:
    queue = f"{prefix}.pull"
    with peer("worker", prefix, queue=queue) as worker:
        worker.wait_for("ready")  # 0.9 declared the queue
        ours_queue = ours.task_queue(queue)  # we declare it again: must be accepted
        results = [ours_queue.task_send(body) for body in (3, "four")]
        assert [future.result(WAIT) for future in results if future is not None] == [
            {"echo": 3, "by": "kiwipy-0.9"},
            {"echo": "four", "by": "kiwipy-0.9"},
        ]
    ours_queue.add_task_subscriber(_echo)
    with peer("send-tasks", prefix, queue=queue, bodies=["back"]) as sender:
        result = sender.wait_for("result", WAIT)
    assert result["result"] == {"echo": "back", "by": "kiwipy-new"}


def test_rpcs_both_ways(prefix: str, ours: rmq.RmqThreadCommunicator) -> None:
    ours.add_rpc_subscriber(_echo, "new")
    with peer("rpc-client", prefix, identifier="new", bodies=["ping"]) as client:
        assert client.wait_for("result", WAIT)["result"] == {"echo": "ping", "by": "kiwipy-new"}
    with peer("rpc-server", prefix, identifier="old") as server:
        server.wait_for("ready")
        reply = ours.rpc_send("old", "pong").result(WAIT)
    assert reply == {"echo": "pong", "by": "kiwipy-0.9"}


def test_broadcasts_both_ways(prefix: str, ours: rmq.RmqThreadCommunicator) -> None:
    received: kiwipy.Future[Any] = kiwipy.Future()
    ours.add_broadcast_subscriber(lambda _comm, *args: received.set_result(args))
    with peer("broadcaster", prefix, bodies=["from 0.9"]) as sender:
        assert sender.wait_for("sent", WAIT)["acked"]
        assert received.result(WAIT) == ("from 0.9", "peer09", "subject.0", 0)
    with peer("listener", prefix) as listener:
        listener.wait_for("ready")
        assert ours.broadcast_send("from us", sender="new", subject="s", correlation_id=1)
        event = listener.wait_for("broadcast", WAIT)
    assert (event["body"], event["sender"]) == ("from us", "new")
