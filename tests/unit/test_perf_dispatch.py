"""The thread facade's subscriber dispatcher and quick sends (issue 6): behaviour only."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
import uuid
from typing import Any

import pytest

import kiwipy
from kiwipy import _broadcasts, _dispatch, memory

WAIT = 5.0


async def test_calls_run_on_worker_threads_and_resolve_loop_futures() -> None:
    dispatcher = _dispatch.Dispatcher(asyncio.get_running_loop(), "test-dispatch", max_workers=3)
    try:
        names = await asyncio.gather(
            *(dispatcher.run(lambda: threading.current_thread().name) for _ in range(20))
        )
        assert all(name.startswith("test-dispatch_") for name in names)
        assert threading.current_thread().name not in names
        assert len(set(names)) <= 3
    finally:
        dispatcher.close()


async def test_errors_including_base_exceptions_come_back() -> None:
    dispatcher = _dispatch.Dispatcher(asyncio.get_running_loop(), "test-dispatch")

    def boom() -> None:
        raise SystemExit(3)

    try:
        with pytest.raises(ValueError):
            await dispatcher.run(lambda: int("x"))
        with pytest.raises(SystemExit):
            await dispatcher.run(boom)
        assert await dispatcher.run(lambda: 42) == 42
    finally:
        dispatcher.close()


async def test_a_blocked_call_does_not_block_the_others() -> None:
    dispatcher = _dispatch.Dispatcher(asyncio.get_running_loop(), "test-dispatch", max_workers=2)
    release = threading.Event()
    try:
        blocked = dispatcher.run(lambda: release.wait(WAIT))
        assert await asyncio.wait_for(dispatcher.run(lambda: "free"), WAIT) == "free"
        release.set()
        assert await blocked is True
    finally:
        dispatcher.close()


async def test_serial_calls_keep_their_order_and_never_overlap() -> None:
    dispatcher = _dispatch.Dispatcher(asyncio.get_running_loop(), "test-dispatch", max_workers=4)
    running: list[int] = []
    order: list[tuple[str, int]] = []
    overlaps: list[int] = []
    lock = threading.Lock()

    def call(key: str, n: int) -> int:
        with lock:
            running.append(n)
            if len([r for r in running if r // 1000 == n // 1000]) > 1:
                overlaps.append(n)
        time.sleep(0.0005)
        with lock:
            running.remove(n)
            order.append((key, n))
        return n

    try:
        futures = [
            dispatcher.run_serial(key, functools.partial(call, key, base + i))
            for i in range(30)
            for key, base in (("a", 1000), ("b", 2000))
        ]
        assert await asyncio.gather(*futures) == [
            base + i for i in range(30) for base in (1000, 2000)
        ]
        assert overlaps == []
        assert [n for key, n in order if key == "a"] == [1000 + i for i in range(30)]
        assert [n for key, n in order if key == "b"] == [2000 + i for i in range(30)]
    finally:
        dispatcher.close()


async def test_a_cancelled_call_is_dropped_quietly() -> None:
    """A call whose future was cancelled still runs; its outcome, arriving later, is dropped
    without an error on the loop, and the calls after it are served."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    # one worker: calls run, and their outcomes reach the loop, in the order they were queued
    dispatcher = _dispatch.Dispatcher(loop, "test-dispatch", max_workers=1)
    release, ran = threading.Event(), threading.Event()

    def cancelled_call() -> str:
        release.wait(5)
        ran.set()
        return "too late"

    try:
        future = dispatcher.run(cancelled_call)
        future.cancel()
        release.set()
        # "next" is served after the cancelled call's outcome was handled on the loop
        assert await asyncio.wait_for(dispatcher.run(lambda: "next"), 5) == "next"
        assert ran.is_set()
        assert future.cancelled()
        assert reported == []
    finally:
        dispatcher.close()
        loop.set_exception_handler(None)


@pytest.fixture
def comm() -> Any:
    communicator = memory.connect(f"memory://perf-{uuid.uuid4().hex}", encoder="json")
    yield communicator
    communicator.close()


def test_subscriber_errors_keep_their_meaning(comm: memory.MemoryCommunicator) -> None:
    def reject(_c: Any, _task: Any) -> None:
        raise kiwipy.TaskRejected("not me")

    def fail(_c: Any, task: Any) -> None:
        raise RuntimeError(f"bad {task}")

    comm.add_task_subscriber(reject)
    comm.add_task_subscriber(fail)
    with pytest.raises(kiwipy.RemoteException, match="bad 1"):
        comm.task_send(1).result(WAIT)


def test_task_send_many_on_memory(comm: memory.MemoryCommunicator) -> None:
    comm.add_task_subscriber(lambda _c, task: task * 2)
    futures = comm.task_send_many(range(50))
    assert [future.result(WAIT) for future in futures] == [2 * i for i in range(50)]
    assert comm.task_send_many(["a", "b"], no_reply=True) == [None, None]


def test_task_send_many_encodes_everything_before_sending(
    comm: memory.MemoryCommunicator,
) -> None:
    seen: list[Any] = []
    comm.add_task_subscriber(lambda _c, task: seen.append(task))
    with pytest.raises(kiwipy.EncodeError):
        comm.task_send_many([1, object(), 3], no_reply=True)
    comm.task_send(4).result(WAIT)
    assert seen == [4]


def test_rpc_send_many_gives_thread_futures_also_in_its_error(
    comm: memory.MemoryCommunicator,
) -> None:
    comm.add_rpc_subscriber(lambda _c, msg: msg * 2, "double")
    futures = comm.rpc_send_many([("double", 1), ("double", 2)])
    assert [future.result(WAIT) for future in futures] == [2, 4]
    with pytest.raises(kiwipy.BatchSendError) as caught:
        comm.rpc_send_many([("nobody", 1), ("double", 3)])
    first, second = caught.value.futures
    assert first is None and isinstance(caught.value.errors[0], kiwipy.UnroutableError)
    assert isinstance(second, concurrent.futures.Future) and second.result(WAIT) == 6


@pytest.mark.parametrize(
    ("item", "arguments"),
    [
        (("b",), ("b", None, None, None)),
        (("b", "s"), ("b", "s", None, None)),
        (("b", "s", "t"), ("b", "s", "t", None)),
        (("b", "s", "t", "c"), ("b", "s", "t", "c")),
        ((None,), (None, None, None, None)),
    ],
)
def test_broadcast_batch_items_are_broadcast_send_arguments(
    item: tuple[Any, ...], arguments: tuple[Any, ...]
) -> None:
    assert _broadcasts.batch_arguments(item) == arguments


@pytest.mark.parametrize("item", ["b", ["b"], (), ("b", "s", "t", "c", "x"), None])
def test_malformed_broadcast_batch_items(item: Any) -> None:
    with pytest.raises(TypeError, match="broadcast_send_many item"):
        _broadcasts.batch_arguments(item)


def test_broadcast_send_many_on_the_thread_facade(comm: memory.MemoryCommunicator) -> None:
    heard: list[Any] = []
    done = threading.Event()

    def listen(_c: Any, *args: Any) -> None:
        heard.append(args)
        if len(heard) == 3:
            done.set()

    comm.add_broadcast_subscriber(listen)
    assert comm.broadcast_send_many([(1,), (2, "s"), (3, "s", "t", "c")]) is None
    assert done.wait(WAIT)
    assert heard == [(1, None, None, None), (2, "s", None, None), (3, "s", "t", "c")]


async def test_task_send_many_on_the_asyncio_memory_core() -> None:
    core = await memory.async_connect(f"memory://perf-async-{uuid.uuid4().hex}")
    try:
        await core.add_task_subscriber(lambda _c, task: task + 1)
        futures = await core.task_send_many([1, 2, 3])
        assert [await asyncio.wait_for(f, WAIT) for f in futures if f is not None] == [2, 3, 4]
    finally:
        await core.disconnect()


def test_communicators_without_batches_say_so() -> None:
    local = kiwipy.LocalCommunicator()
    with pytest.raises(NotImplementedError):
        local.task_send_many([1])
    with pytest.raises(NotImplementedError):
        local.rpc_send_many([("anyone", 1)])
    with pytest.raises(NotImplementedError):
        local.broadcast_send_many([("news",)])
