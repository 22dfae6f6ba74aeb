"""The generic thread facade (``kiwipy._thread``) over an asyncio core, here the memory one."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import kiwipy
from kiwipy import memory
from kiwipy._portal import LoopThread, to_asyncio, to_concurrent
from kiwipy._thread import ThreadCommunicator

WAIT = 5.0


@pytest.fixture
def uri(unique_name: str) -> Iterator[str]:
    yield f"memory://{unique_name}"
    memory.drop_broker(unique_name)


@pytest.fixture
def comm(uri: str) -> Iterator[memory.MemoryCommunicator]:
    communicator = memory.connect(uri)
    yield communicator
    communicator.close()


class SlowCore(memory.AsyncMemoryCommunicator):
    """A core whose broadcasts take far longer than the facade's call timeout."""

    async def broadcast_send(self, *args: Any, **kwargs: Any) -> bool:
        await asyncio.sleep(30)
        return True


def slow_communicator(uri: str, timeout: float) -> ThreadCommunicator:
    async def create() -> memory.AsyncMemoryCommunicator:
        core = SlowCore(memory.get_broker(memory.broker_name(uri)))
        await core.connect()
        return core

    return ThreadCommunicator(create, timeout=timeout)


def test_blocking_call_from_the_loop_thread_raises(comm: memory.MemoryCommunicator) -> None:
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def on_loop() -> None:
        try:
            comm.broadcast_send("from the loop thread")
        except BaseException as exc:
            outcome.set_exception(exc)
        else:
            outcome.set_result("no error")

    comm.loop().call_soon_threadsafe(on_loop)
    with pytest.raises(RuntimeError, match="deadlock"):
        outcome.result(WAIT)


def test_subscribers_run_off_the_loop_and_may_block(comm: memory.MemoryCommunicator) -> None:
    seen: list[Any] = []
    comm.add_task_subscriber(lambda _c, task: task.upper())

    def relay(c: Any, msg: Any) -> Any:
        try:
            seen.append(asyncio.get_running_loop())
        except RuntimeError:  # no loop runs here: not the communicator's loop thread
            seen.append(threading.current_thread())
        return c.task_send(msg).result(WAIT)  # the blocking API, from a subscriber

    comm.add_rpc_subscriber(relay, "relay")
    assert comm.rpc_send("relay", "shout").result(WAIT) == "SHOUT"
    assert len(seen) == 1 and isinstance(seen[0], threading.Thread)
    assert seen[0] is not threading.main_thread()


def test_rpc_calls_to_one_subscriber_are_serialised(comm: memory.MemoryCommunicator) -> None:
    running, order = [], []
    lock = threading.Lock()

    def subscriber(_c: Any, msg: int) -> int:
        with lock:
            running.append(msg)
            overlap = len(running) > 1
        time.sleep(0.002)  # give an overlapping call the chance to show up
        with lock:
            running.remove(msg)
            order.append(msg)
        assert not overlap
        return msg

    comm.add_rpc_subscriber(subscriber, "serial")
    futures = [comm.rpc_send("serial", n) for n in range(10)]
    assert [future.result(WAIT) for future in futures] == list(range(10))
    assert order == list(range(10))


def test_timeout(uri: str) -> None:
    comm = slow_communicator(uri, timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(kiwipy.TimeoutError, match="0.2 seconds"):
            comm.broadcast_send("slow")
        assert time.monotonic() - started < 2.0
        comm.add_rpc_subscriber(lambda _c, msg: msg, "fine")  # still usable afterwards
        assert comm.rpc_send("fine", 1).result(WAIT) == 1
    finally:
        comm.close()


def test_broadcast_send_waits_at_most_the_call_timeout_for_own_subscribers(uri: str) -> None:
    """The barrier (docs/guarantees.md) is bounded and never an error: a subscriber stuck
    far longer than the call timeout delays a blocking broadcast_send by that timeout."""
    timeout = 0.3
    comm = memory.connect(uri, async_task_timeout=timeout)
    release = threading.Event()
    try:
        comm.add_broadcast_subscriber(lambda *_args: release.wait(2 * WAIT))
        started = time.monotonic()
        assert comm.broadcast_send("stuck") is True
        assert timeout * 0.9 <= time.monotonic() - started < WAIT
        started = time.monotonic()
        assert comm.broadcast_send_many([("stuck too",)]) is None
        assert timeout * 0.9 <= time.monotonic() - started < WAIT
    finally:
        release.set()
        comm.close()


def test_broadcast_send_does_not_wait_for_a_future_its_subscriber_returned(uri: str) -> None:
    """plumpy's broadcast subscribers return a future that plumpy's own loop resolves later,
    and that loop is the thread calling broadcast_send (every AiiDA state change): waiting
    for it would cost each broadcast the whole call timeout. kiwipy 0.9 ignored it too."""
    timeout = 2.0
    comm = memory.connect(uri, async_task_timeout=timeout)
    later: concurrent.futures.Future[None] = concurrent.futures.Future()
    called = threading.Event()

    def subscriber(*_args: object) -> concurrent.futures.Future[None]:
        called.set()
        return later

    try:
        comm.add_broadcast_subscriber(subscriber)
        started = time.monotonic()
        assert comm.broadcast_send("state_changed") is True
        assert called.is_set()  # the barrier still waits for the call itself
        assert time.monotonic() - started < timeout / 2
    finally:
        later.set_result(None)
        comm.close()


def test_broadcast_send_from_an_own_subscriber_does_not_wait_for_itself(uri: str) -> None:
    """Its own broadcast queues behind the subscriber sending it: waiting for it would take
    the whole call timeout."""
    timeout = 2.0
    comm = memory.connect(uri, async_task_timeout=timeout)
    took: concurrent.futures.Future[float] = concurrent.futures.Future()

    def relay(own: Any, body: Any, *_rest: Any) -> None:
        if body == "first":
            started = time.monotonic()
            own.broadcast_send("second")
            took.set_result(time.monotonic() - started)

    try:
        comm.add_broadcast_subscriber(relay)
        comm.broadcast_send("first")
        assert took.result(WAIT) < timeout / 2
    finally:
        comm.close()


def test_connect_timeout_stops_the_thread(unique_name: str) -> None:
    async def never() -> Any:
        await asyncio.sleep(30)

    with pytest.raises(kiwipy.TimeoutError):
        ThreadCommunicator(never, timeout=0.1, name=unique_name)
    assert unique_name not in [thread.name for thread in threading.enumerate()]


def test_nested_futures_both_ways(comm: memory.MemoryCommunicator) -> None:
    inner: concurrent.futures.Future[Any] = concurrent.futures.Future()
    outer: concurrent.futures.Future[Any] = concurrent.futures.Future()
    outer.set_result(inner)  # a thread-world future resolving to another one
    comm.add_rpc_subscriber(lambda _c, msg: outer, "nested")
    level0 = comm.rpc_send("nested", None)
    level1 = level0.result(WAIT)
    assert isinstance(level1, kiwipy.Future)
    level2 = level1.result(WAIT)
    assert isinstance(level2, kiwipy.Future)
    inner.set_result("deep")
    assert level2.result(WAIT) == "deep"


def test_async_subscriber_on_a_thread_communicator(comm: memory.MemoryCommunicator) -> None:
    async def subscriber(_c: Any, msg: Any) -> Any:
        await asyncio.sleep(0)
        return msg * 2

    comm.add_rpc_subscriber(subscriber, "async")
    assert comm.rpc_send("async", 4).result(WAIT) == 8


def test_remove_wrapped_task_subscriber(comm: memory.MemoryCommunicator) -> None:
    identifier = comm.add_task_subscriber(lambda _c, task: "removed one")
    comm.remove_task_subscriber(identifier)  # kiwipy 0.9 feared this would not work (B10)
    comm.add_task_subscriber(lambda _c, task: "current one")
    future = comm.task_send(None)
    assert future is not None and future.result(WAIT) == "current one"


def test_dropped_process_future_requeues(comm: memory.MemoryCommunicator) -> None:
    queue = comm.task_queue("gc")
    future = queue.task_send("drop me")
    with queue.next_task(timeout=WAIT) as task:
        assert task is not None
        task.process()  # dropped at once: the core's outcome is collected and requeues
        gc.collect()
        comm.broadcast_send(None)  # runs on the loop after the requeue posted there
        assert task.state == "requeued"
    with queue.next_task(timeout=WAIT) as task:
        assert task is not None
        task.process().set_result("again")
    assert future is not None and future.result(WAIT) == "again"


def test_close_is_idempotent_and_bounded(uri: str) -> None:
    comm = memory.connect(uri)
    release = threading.Event()
    entered = threading.Event()

    def stuck(_c: Any, task: Any) -> None:
        entered.set()
        release.wait(WAIT)

    comm.add_task_subscriber(stuck)
    future = comm.task_send("stuck")
    assert entered.wait(WAIT)
    started = time.monotonic()
    comm.close()
    comm.close()
    assert time.monotonic() - started < 2.0
    assert comm.is_closed()
    with pytest.raises(kiwipy.CommunicatorClosed):
        assert future is not None
        future.result(WAIT)
    release.set()


def test_close_from_a_subscriber(uri: str) -> None:
    comm = memory.connect(uri)
    closed = threading.Event()

    def close_me(c: Any, *_message: Any) -> None:
        c.close()
        closed.set()

    comm.add_broadcast_subscriber(close_me)
    comm.broadcast_send("close")
    assert closed.wait(WAIT)
    assert comm.is_closed()


def test_context_manager(uri: str) -> None:
    with memory.connect(uri) as comm:
        assert not comm.is_closed()
    assert comm.is_closed()


async def test_blocking_api_inside_a_running_loop(comm: memory.MemoryCommunicator) -> None:
    """Jupyter and async tests call the blocking API from a thread running its own loop."""
    comm.add_rpc_subscriber(lambda _c, msg: msg + 1, "inc")
    assert comm.rpc_send("inc", 1).result(WAIT) == 2
    assert await asyncio.wait_for(asyncio.wrap_future(comm.rpc_send("inc", 2)), WAIT) == 3


@pytest.fixture
def portal() -> Iterator[LoopThread]:
    loop_thread = LoopThread("kiwipy test portal")
    yield loop_thread
    loop_thread.stop()


def test_to_concurrent_from_another_thread_never_misses_a_result(portal: LoopThread) -> None:
    """Regression: the conversion used to add its callback from the caller's thread, which
    could be lost (or never wake the loop) when the future completed at the same moment."""

    async def make() -> asyncio.Future[Any]:
        return portal.loop.create_future()

    for n in range(200):
        source = portal.call(make, timeout=WAIT)
        portal.loop.call_soon_threadsafe(source.set_result, n)
        assert to_concurrent(source).result(WAIT) == n


def test_cancellation_crosses_threads(portal: LoopThread) -> None:
    async def make() -> asyncio.Future[Any]:
        return portal.loop.create_future()

    source = portal.call(make, timeout=WAIT)
    to_concurrent(source).cancel()  # the thread world gives up: the asyncio side is cancelled

    async def check() -> bool:
        await asyncio.sleep(0)
        return source.cancelled()

    assert portal.call(check, timeout=WAIT)

    origin: concurrent.futures.Future[Any] = concurrent.futures.Future()

    async def follow() -> Any:
        return await to_asyncio(origin, asyncio.get_running_loop())

    following = portal.submit(follow())
    origin.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        following.result(WAIT)
