"""The blocking RmqThreadCommunicator: kiwipy 0.9's surface, lifecycle and bug fixes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading

import pytest

import kiwipy
from kiwipy import rmq

WAIT = 5.0


def test_rpc_task_broadcast(thread_communicator: rmq.RmqThreadCommunicator) -> None:
    comm = thread_communicator
    threads = []

    def rpc(c, msg):
        threads.append(threading.current_thread().name)
        return (c is comm, msg)

    comm.add_rpc_subscriber(rpc, "t-rpc")
    assert comm.rpc_send("t-rpc", 1).result(WAIT) == (True, 1)
    comm.add_task_subscriber(lambda c, task: task + 1)
    assert comm.task_send(1).result(WAIT) == 2
    got: concurrent.futures.Future = concurrent.futures.Future()
    comm.add_broadcast_subscriber(lambda *args: got.set_result(args))
    assert comm.broadcast_send("b", sender="s", subject="x") is True
    assert got.result(WAIT) == (comm, "b", "s", "x", None)
    assert threads == ["RMQ communicator callbacks_0"]  # the pool, never the loop thread


def test_nested_thread_futures(thread_communicator: rmq.RmqThreadCommunicator) -> None:
    inner: kiwipy.Future = kiwipy.Future()
    thread_communicator.add_rpc_subscriber(lambda _c, _m: inner, "nest")
    level1 = thread_communicator.rpc_send("nest", None).result(WAIT)
    assert isinstance(level1, concurrent.futures.Future)
    inner.set_result("deep")
    assert level1.result(WAIT) == "deep"


def test_unroutable_raises_from_the_call(thread_communicator) -> None:
    with pytest.raises(kiwipy.UnroutableError):
        thread_communicator.rpc_send("nobody", 1)


def test_remove_subscribers_with_returned_ids(thread_communicator, names) -> None:
    comm = thread_communicator
    ids = [
        comm.add_rpc_subscriber(lambda _c, m: m),
        comm.add_task_subscriber(lambda _c, t: t),
        comm.add_broadcast_subscriber(lambda *a: None),
    ]
    comm.remove_rpc_subscriber(ids[0])
    comm.remove_task_subscriber(ids[1])
    comm.remove_broadcast_subscriber(ids[2])
    queue = comm.task_queue(f"{names.prefix}.q")
    ident = queue.add_task_subscriber(lambda _c, t: t)
    queue.remove_task_subscriber(ident)  # B10: works with the id returned
    with pytest.raises(ValueError):
        comm.remove_rpc_subscriber(ids[0])


def test_close_is_idempotent_and_final(rmq_uri, names) -> None:
    comm = rmq.connect(rmq_uri, **names.options())
    closed = []
    comm.add_close_callback(lambda sender, exc: closed.append(exc))
    comm.add_rpc_subscriber(lambda _c, m: m, "r")
    done = comm.rpc_send("r", "kept")
    assert done.result(WAIT) == "kept"
    waiting = comm.task_send("nobody takes it")
    comm.close()
    comm.close()
    assert comm.is_closed()
    assert closed and len(closed) == 1
    assert done.result() == "kept"  # results survive close (notebook use)
    with pytest.raises(kiwipy.CommunicatorClosed):
        waiting.result(WAIT)  # B16 (close part): never hangs
    with pytest.raises(kiwipy.CommunicatorClosed):
        comm.task_send(1)
    with pytest.raises(kiwipy.CommunicatorClosed):
        _ = comm.server_properties  # B9: not AttributeError
    with pytest.raises(kiwipy.CommunicatorClosed):
        comm.add_close_callback(lambda *a: None)


def test_context_manager_delivers_before_closing(rmq_uri, names) -> None:
    received: kiwipy.Future = kiwipy.Future()
    comm = rmq.RmqThreadCommunicator.connect(rmq_uri, **names.options())
    comm.add_rpc_subscriber(lambda _c, msg: received.set_result(msg), "ctx")
    with comm:
        comm.rpc_send("ctx", "get this yo")
    assert received.result(WAIT) == "get this yo"


def test_server_properties_loop_and_private_loop(thread_communicator) -> None:
    assert thread_communicator.server_properties["product"] == "RabbitMQ"
    loop = thread_communicator.loop()
    assert loop is thread_communicator._loop and loop.is_running()
    thread_communicator._loop.set_debug(True)  # what plumpy's tests do
    thread_communicator._loop.set_debug(False)


def test_every_option_everywhere(rmq_uri, names) -> None:
    """B8: queue_expires and async_task_timeout reach rmq.connect and .connect()."""
    comm = rmq.connect(rmq_uri, **names.options(queue_expires=30000, async_task_timeout=2.5))
    try:
        assert comm._bridge.timeout == 2.5
        assert comm.core._options["queue_expires"] == 30000
    finally:
        comm.close()
    assert rmq.RmqThreadCommunicator.TASK_TIMEOUT == 5.0
    with pytest.raises(TypeError):
        rmq.RmqThreadCommunicator.connect(rmq_uri, not_an_option=1)


def test_kiwipy_connect_gives_a_thread_communicator(rmq_uri, names) -> None:
    with kiwipy.connect(rmq_uri, **names.options()) as comm:
        assert isinstance(comm, rmq.RmqThreadCommunicator)
        comm.add_rpc_subscriber(lambda _c, m: m * 2, "double")
        assert comm.rpc_send("double", 4).result(WAIT) == 8


async def test_works_inside_a_running_event_loop(rmq_uri, names) -> None:
    """The facade never touches the caller's loop (e.g. Jupyter or an asyncio app)."""
    comm = rmq.connect(rmq_uri, **names.options())
    try:
        comm.add_task_subscriber(lambda _c, t: t * 3)
        assert comm.task_send(3).result(WAIT) == 9
        assert comm.loop() is not asyncio.get_running_loop()
    finally:
        comm.close()


def test_blocking_call_from_the_loop_thread_is_an_error(thread_communicator) -> None:
    errors: kiwipy.Future = kiwipy.Future()

    async def on_loop() -> None:
        try:
            thread_communicator.task_send(1)
        except RuntimeError as exc:
            errors.set_result(exc)

    asyncio.run_coroutine_threadsafe(on_loop(), thread_communicator.loop()).result(WAIT)
    assert "deadlock" in str(errors.result(WAIT))


def test_subscriber_may_call_the_blocking_api(thread_communicator) -> None:
    comm = thread_communicator
    comm.add_rpc_subscriber(lambda _c, m: m + 1, "inner")
    comm.add_rpc_subscriber(lambda c, m: c.rpc_send("inner", m).result(WAIT) * 10, "outer")
    assert comm.rpc_send("outer", 1).result(WAIT) == 20


def test_pull_mode(thread_communicator, names) -> None:
    queue = thread_communicator.task_queue(f"{names.prefix}.pull")
    results = [queue.task_send(i) for i in range(5)]
    for task in queue:
        with task.processing() as outcome:
            outcome.set_result(task.body * 10)
    assert [r.result(WAIT) for r in results] == [0, 10, 20, 30, 40]
    assert list(queue) == []
    forgotten = queue.task_send("again")
    with queue.next_task() as task:
        outcome = task.process()
    del outcome
    gc.collect()
    with queue.next_task(timeout=WAIT) as task:
        task.process().set_result("second time")
    assert forgotten.result(WAIT) == "second time"
    with pytest.raises(kiwipy.QueueEmpty):
        with queue.next_task(timeout=0.1):
            pass


def test_pull_processing_exception_reaches_both_sides(thread_communicator, names) -> None:
    queue = thread_communicator.task_queue(f"{names.prefix}.exc")
    future = queue.task_send("Do this")
    with pytest.raises(RuntimeError):
        with queue.next_task(timeout=WAIT) as task:
            with task.processing():
                raise RuntimeError("Cannea do it captain!")
    with pytest.raises(kiwipy.RemoteException):
        future.result(WAIT)


def test_broadcast_fence_only_while_receiving_broadcasts(thread_communicator) -> None:
    """The barrier's broker round trip (docs/guarantees.md) costs nothing without a
    broadcast subscriber."""
    comm = thread_communicator
    tally = comm.core.broadcast_tally()
    assert tally.fence is None
    ident = comm.add_broadcast_subscriber(lambda *_args: None)
    assert tally.fence is not None
    comm.remove_broadcast_subscriber(ident)
    assert tally.fence is None
    assert comm.broadcast_send("nobody listens") is True


def test_a_failing_broadcast_fence_never_fails_the_send(thread_communicator) -> None:
    comm = thread_communicator
    heard: concurrent.futures.Future = concurrent.futures.Future()
    comm.add_broadcast_subscriber(lambda _c, body, *_rest: heard.set_result(body))

    async def broken() -> None:
        raise kiwipy.ConnectionLost("fence refused")

    comm.core.broadcast_tally().fence = broken
    assert comm.broadcast_send("still sent") is True
    assert heard.result(WAIT) == "still sent"
