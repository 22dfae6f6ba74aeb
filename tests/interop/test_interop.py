"""Interoperability with kiwipy 0.9, proven: tasks, RPCs and broadcasts in both directions
between our RmqThreadCommunicator and a kiwipy 0.9 process, with the default YAML encoder.

Both sides run outside testing mode (kiwipy 0.9 declares its exchanges and task queue durable
there, and the declarations must match). Our side uses ``task_queue_compat=True`` so that
whichever side declares the task queue first, it gets kiwipy 0.9's arguments.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest

import kiwipy
from kiwipy import rmq

from .._ci import require
from .harness import Peer09, connect_ours, delete_peer09_declarations, kiwipy09_python

pytestmark = [pytest.mark.interop, pytest.mark.integration]

URL = os.environ.get("KIWIPY_TEST_RMQ_URI", "amqp://guest:guest@127.0.0.1:5672/")
WAIT = 10.0
BY = "kiwipy-new"


@pytest.fixture(scope="module", autouse=True)
def _prerequisites() -> None:
    url = urlsplit(URL)
    try:
        socket.create_connection((url.hostname or "127.0.0.1", url.port or 5672), 2).close()
        reachable = True
    except OSError:
        reachable = False
    require(reachable, f"RabbitMQ is unreachable at {URL}")
    try:
        kiwipy09_python()
    except (subprocess.CalledProcessError, OSError) as exc:
        require(False, f"cannot create the kiwipy 0.9 venv: {exc}")


async def _cleanup(prefix: str) -> None:
    await delete_peer09_declarations(URL, prefix)
    async with await aio_pika.connect(URL) as connection:
        channel = await connection.channel()
        await channel.queue_delete(f"{prefix}.tasks.dead")


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"kiwitest.interop.{uuid.uuid4().hex[:8]}"
    yield name
    asyncio.run(_cleanup(name))


@pytest.fixture
def ours(prefix: str) -> Iterator[rmq.RmqThreadCommunicator]:
    comm = connect_ours(URL, prefix, task_queue_compat=True)
    yield comm
    comm.close()


def _echo(_comm: Any, body: Any) -> Any:
    if body == "boom":
        raise ValueError("boom")
    return {"echo": body, "by": BY}


def test_our_tasks_to_a_kiwipy09_worker(prefix: str, ours: rmq.RmqThreadCommunicator) -> None:
    with Peer09("worker", url=URL, exchange_prefix=prefix) as worker:
        worker.wait_for("ready")  # it declared the task queue with 0.9's arguments
        futures = [ours.task_send(body) for body in (1, "two", {"three": 3})]
        failing = ours.task_send("boom")
        results = [future.result(WAIT) for future in futures]
        assert results == [{"echo": b, "by": "kiwipy-0.9"} for b in (1, "two", {"three": 3})]
        with pytest.raises(kiwipy.RemoteException) as info:
            failing.result(WAIT)
        assert info.value.args == ("boom",)
        received = [event["body"] for event in worker.wait_for_count("task", 4)]
        assert received == [1, "two", {"three": 3}, "boom"]


def test_kiwipy09_tasks_to_our_worker(prefix: str, ours: rmq.RmqThreadCommunicator) -> None:
    ours.add_task_subscriber(_echo)  # declares the queue first: compat arguments
    bodies = [0, "one", [2, 2]]
    with Peer09("send-tasks", url=URL, exchange_prefix=prefix, bodies=[*bodies, "boom"]) as sender:
        results = sender.wait_for_count("result", 3, WAIT)
        error = sender.wait_for("error", WAIT)
    assert [event["result"] for event in results] == [{"echo": b, "by": BY} for b in bodies]
    assert (error["error_type"], error["error"]) == ("RemoteException", "boom")


def test_our_rpc_to_a_kiwipy09_server(prefix: str, ours: rmq.RmqThreadCommunicator) -> None:
    with Peer09("rpc-server", url=URL, exchange_prefix=prefix, identifier="old") as server:
        server.wait_for("ready")
        assert ours.rpc_send("old", "ping").result(WAIT) == {"echo": "ping", "by": "kiwipy-0.9"}
        with pytest.raises(kiwipy.RemoteException, match="boom"):
            ours.rpc_send("old", "boom").result(WAIT)
        assert server.wait_for_count("rpc", 2)[0]["body"] == "ping"
    with pytest.raises(kiwipy.UnroutableError):
        ours.rpc_send("old", "gone")


def test_kiwipy09_rpc_to_our_server(prefix: str, ours: rmq.RmqThreadCommunicator) -> None:
    def server(_comm: Any, msg: Any) -> Any:
        if msg == "nested":  # a future: 0.9 receives pending, then the result
            future: kiwipy.Future = kiwipy.Future()
            future.set_result({"echo": msg, "by": BY})
            return future
        return _echo(_comm, msg)

    ours.add_rpc_subscriber(server, "new")
    bodies = ["ping", "nested", "boom"]
    with Peer09(
        "rpc-client", url=URL, exchange_prefix=prefix, identifier="new", bodies=bodies
    ) as client:
        results = client.wait_for_count("result", 2, WAIT)
        error = client.wait_for("error", WAIT)
    assert [event["result"] for event in results] == [
        {"echo": "ping", "by": BY},
        {"echo": "nested", "by": BY},
    ]
    assert (error["error_type"], error["error"]) == ("RemoteException", "boom")


def test_our_broadcasts_to_a_kiwipy09_listener(prefix: str, ours: rmq.RmqThreadCommunicator):
    with Peer09("listener", url=URL, exchange_prefix=prefix) as listener:
        listener.wait_for("ready")
        assert ours.broadcast_send({"k": 1}, sender="new", subject="news.a", correlation_id=5)
        event = listener.wait_for("broadcast", WAIT)
    assert (event["body"], event["sender"], event["subject"], event["correlation_id"]) == (
        {"k": 1},
        "new",
        "news.a",
        5,
    )


def test_kiwipy09_broadcasts_to_our_subscriber(prefix: str, ours: rmq.RmqThreadCommunicator):
    received: list[tuple[Any, ...]] = []
    done: kiwipy.Future = kiwipy.Future()

    def listen(_comm: Any, *args: Any) -> None:
        received.append(args)
        if len(received) == 2:
            done.set_result(True)

    ours.add_broadcast_subscriber(kiwipy.BroadcastFilter(listen, subject="subject.*"))
    with Peer09("broadcaster", url=URL, exchange_prefix=prefix, bodies=["a", "b"]) as sender:
        sent = sender.wait_for_count("sent", 2, WAIT)
        done.result(WAIT)
    assert all(event["acked"] for event in sent)
    assert received == [("a", "peer09", "subject.0", 0), ("b", "peer09", "subject.1", 1)]


# Traced (issue 17): kiwipy 0.9 ignores the trace context headers, both ways.


def _kiwipy_spans(kind: str, span_kind: Any) -> list[Any]:
    from opentelemetry import trace

    from ..contract_tracing import otel_sdk

    wanted = getattr(trace.SpanKind, span_kind)
    return [
        span
        for span in otel_sdk().spans.get_finished_spans()
        if span.kind == wanted and (span.attributes or {}).get("kiwipy.message.kind") == kind
    ]


def test_traced_sends_to_kiwipy09_peers(prefix: str, ours: rmq.RmqThreadCommunicator) -> None:
    from opentelemetry import trace

    from ..contract_tracing import otel_sdk

    otel_sdk()
    tracer = trace.get_tracer("interop")
    with Peer09("worker", url=URL, exchange_prefix=prefix) as worker:
        worker.wait_for("ready")
        with tracer.start_as_current_span("to 0.9 worker") as root:
            assert ours.task_send("t").result(WAIT) == {"echo": "t", "by": "kiwipy-0.9"}
    with Peer09("rpc-server", url=URL, exchange_prefix=prefix, identifier="old") as server:
        server.wait_for("ready")
        with tracer.start_as_current_span("to 0.9 server"):
            assert ours.rpc_send("old", "r").result(WAIT) == {"echo": "r", "by": "kiwipy-0.9"}
    with Peer09("listener", url=URL, exchange_prefix=prefix) as listener:
        listener.wait_for("ready")
        with tracer.start_as_current_span("to 0.9 listener"):
            assert ours.broadcast_send("b", sender="new", subject="news.traced")
        assert listener.wait_for("broadcast", WAIT)["body"] == "b"
    trace_id = root.get_span_context().trace_id
    assert [s.context.trace_id for s in _kiwipy_spans("task", "PRODUCER")].count(trace_id) == 1
    assert _kiwipy_spans("rpc", "PRODUCER") and _kiwipy_spans("broadcast", "PRODUCER")


def test_untraced_kiwipy09_messages_start_a_trace_here(
    prefix: str, ours: rmq.RmqThreadCommunicator
) -> None:
    from ..contract_tracing import otel_sdk

    otel_sdk()
    queue = f"{prefix}.tasks"
    ours.add_task_subscriber(_echo)
    with Peer09("send-tasks", url=URL, exchange_prefix=prefix, bodies=["traced?"]) as sender:
        result = sender.wait_for("result", WAIT)
    assert result["result"] == {"echo": "traced?", "by": BY}
    deadline = time.monotonic() + WAIT  # the span ends once the task is acknowledged
    while True:
        ours_consumed = [
            span
            for span in _kiwipy_spans("task", "CONSUMER")
            if (span.attributes or {}).get("messaging.destination.name") == queue
        ]
        if ours_consumed or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert len(ours_consumed) == 1
    assert ours_consumed[0].parent is None  # no traceparent from 0.9: a trace of its own


def test_rpc_with_a_deadline_to_a_kiwipy09_server(
    prefix: str, ours: rmq.RmqThreadCommunicator
) -> None:
    """A 0.9 responder ignores the deadline header and answers as usual (issue 16)."""
    with Peer09("rpc-server", url=URL, exchange_prefix=prefix, identifier="old") as server:
        server.wait_for("ready")
        reply = ours.rpc_send("old", "ping", timeout=WAIT).result(WAIT)
        assert reply == {"echo": "ping", "by": "kiwipy-0.9"}


def test_expired_task_never_reaches_a_kiwipy09_worker(
    prefix: str, ours: rmq.RmqThreadCommunicator
) -> None:
    """The broker honours the AMQP expiration for a 0.9 worker too: a task whose deadline
    passed before the worker came is never delivered (a 0.9 queue has no dead-letter queue,
    so it is dropped), and the next task is (issue 16)."""
    stale = ours.task_send("stale", timeout=0.3)
    with pytest.raises(kiwipy.DeadlineExceeded):
        stale.result(WAIT)
    with Peer09("worker", url=URL, exchange_prefix=prefix) as worker:
        worker.wait_for("ready")
        assert ours.task_send("fresh").result(WAIT) == {"echo": "fresh", "by": "kiwipy-0.9"}
        assert [event["body"] for event in worker.events("task")] == ["fresh"]


def test_a_cancel_never_reaches_a_kiwipy09_server(
    prefix: str, ours: rmq.RmqThreadCommunicator
) -> None:
    """Cancelling an RPC to a 0.9 responder sends it nothing it would run: 0.9 never binds
    the cancel routing key (issue 16)."""
    with Peer09("rpc-server", url=URL, exchange_prefix=prefix, identifier="old") as server:
        server.wait_for("ready")
        ours.rpc_send("old", "ping").cancel()
        assert ours.rpc_send("old", "after").result(WAIT)["echo"] == "after"
        server.wait_for_count("rpc", 2)
        assert [event["body"] for event in server.events("rpc")] == ["ping", "after"]
