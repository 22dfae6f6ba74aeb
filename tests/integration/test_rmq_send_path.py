"""The send path over RabbitMQ (issue 11): a message whose frames cannot be built, large
bodies and messages over ``max_message_size``. After each bad call the communicator still
works: a control task and RPC succeed within :data:`CONTROL` seconds."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import kiwipy
from kiwipy import rmq
from kiwipy.rmq.send import _fastpublish

CONTROL = 3.0
WAIT = 10.0
POISON = b"poison-frames"


@pytest.fixture
def poisoned_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frame building fails, as for a property over 255 bytes, for bodies holding POISON."""
    real = _fastpublish.publish_frames

    def publish_frames(*args: Any) -> list[bytes]:
        if POISON in args[5]:
            raise struct.error("ubyte format requires 0 <= number <= 255")
        return real(*args)

    monkeypatch.setattr(_fastpublish, "publish_frames", publish_frames)


async def _control(comm: rmq.RmqCommunicator, tag: str) -> None:
    async def control() -> None:
        assert await (await comm.rpc_send("echo", tag)) == tag
        assert await (await comm.task_send(tag)) == tag

    await asyncio.wait_for(control(), CONTROL)


def _thread_control(comm: rmq.RmqThreadCommunicator, tag: str) -> None:
    assert comm.rpc_send("echo", tag).result(CONTROL) == tag
    assert comm.task_send(tag).result(CONTROL) == tag


@pytest.fixture
async def echoing(communicator: rmq.RmqCommunicator) -> AsyncIterator[rmq.RmqCommunicator]:
    await communicator.add_rpc_subscriber(lambda _c, msg: msg, "echo")
    await communicator.add_task_subscriber(lambda _c, task: task)
    await _control(communicator, "warm-up")
    yield communicator


@pytest.fixture
def thread_echoing(
    thread_communicator: rmq.RmqThreadCommunicator,
) -> Iterator[rmq.RmqThreadCommunicator]:
    comm = thread_communicator
    comm.add_rpc_subscriber(lambda _c, msg: msg, "echo")
    comm.add_task_subscriber(lambda _c, task: task)
    _thread_control(comm, "warm-up")  # the quick lanes are ready from now on
    yield comm


@pytest.mark.usefixtures("poisoned_frames")
async def test_unbuildable_frames_leave_the_channel_and_replies_clean(
    echoing: rmq.RmqCommunicator,
) -> None:
    comm, poison = echoing, POISON.decode()
    sends = [
        lambda: comm.rpc_send("echo", poison),
        lambda: comm.task_send(poison),
        lambda: comm.broadcast_send(poison),
    ]
    for index, send in enumerate(sends):
        with pytest.raises(kiwipy.EncodeError, match="frames"):
            await send()
        assert comm.pending_replies == 0
        await _control(comm, f"after {index}")  # the confirms still match the broker's
    with pytest.raises(kiwipy.BatchSendError) as info:  # its window was not sent at all
        await comm.task_send_many(["fine", poison])
    assert info.value.futures == [None, None]
    assert isinstance(info.value.errors[1], kiwipy.EncodeError)
    assert comm.pending_replies == 0
    await _control(comm, "after the batch")


@pytest.mark.usefixtures("poisoned_frames")
def test_unbuildable_frames_on_the_quick_lanes_leak_nothing(
    thread_echoing: rmq.RmqThreadCommunicator,
) -> None:
    comm, poison = thread_echoing, POISON.decode()
    core: Any = comm.core
    sends = [
        lambda: comm.rpc_send("echo", poison),
        lambda: comm.task_send(poison),
        lambda: comm.broadcast_send(poison),
    ]
    for index, send in enumerate(sends):
        with pytest.raises(Exception) as info:
            send()
        assert core.pending_replies == 0  # no reply waiter nor liveness watch left behind
        assert isinstance(info.value, kiwipy.EncodeError)
        _thread_control(comm, f"after {index}")


def test_a_long_identifier_does_not_poison_the_quick_lane(
    thread_echoing: rmq.RmqThreadCommunicator,
) -> None:
    """The issue's own case: 200 characters, 400 bytes of UTF-8."""
    comm = thread_echoing
    with pytest.raises(kiwipy.InvalidName, match="RPC identifier.*255"):
        comm.rpc_send("\u00e9" * 200, 1)
    assert comm.core.pending_replies == 0  # type: ignore[attr-defined]
    _thread_control(comm, "after")


@pytest.fixture
async def unbudgeted(rmq_uri: str, names: Any) -> AsyncIterator[rmq.RmqCommunicator]:
    """An echoing communicator without the decode budget (a 6 MB YAML body is over the
    default ``max_decode_memory``: it would be parked as too costly, not echoed)."""
    comm = await rmq.async_connect(rmq_uri, **names.options(max_decode_memory=None))
    await comm.add_rpc_subscriber(lambda _c, msg: msg, "echo")
    await comm.add_task_subscriber(lambda _c, task: task)
    yield comm
    await comm.disconnect()


async def test_an_rpc_of_a_large_body_is_as_quick_as_a_task(
    unbudgeted: rmq.RmqCommunicator,
) -> None:
    """One 6 MB string: the RPC took ~6 s (pure-Python YAML), the task 0.2 s."""
    comm, body = unbudgeted, "x" * (6 * 1024 * 1024)
    start = time.perf_counter()
    assert await asyncio.wait_for(await comm.task_send(body), WAIT) == body
    task_time = time.perf_counter() - start
    start = time.perf_counter()
    assert await asyncio.wait_for(await comm.rpc_send("echo", body), WAIT) == body
    rpc_time = time.perf_counter() - start
    assert rpc_time < 3 * task_time + 1.0, (rpc_time, task_time)


LIMIT = 1024 * 1024
HUGE = "x" * (12 * LIMIT)  # pure-Python YAML needed ~10 s to find it too large


@pytest.fixture
async def limited(rmq_uri: str, names: Any) -> AsyncIterator[rmq.RmqCommunicator]:
    comm = await rmq.async_connect(rmq_uri, **names.options(max_message_size=LIMIT))
    await comm.add_rpc_subscriber(lambda _c, msg: msg, "echo")
    await comm.add_task_subscriber(lambda _c, task: task)
    yield comm
    await comm.disconnect()


async def test_too_large_messages_fail_at_once(limited: rmq.RmqCommunicator) -> None:
    comm = limited
    sends = [
        lambda: comm.rpc_send("echo", HUGE),
        lambda: comm.task_send(HUGE),
        lambda: comm.broadcast_send(HUGE),
    ]
    for index, send in enumerate(sends):
        start = time.perf_counter()  # encoding blocks the loop: wait_for would not notice
        with pytest.raises(kiwipy.MessageTooLarge):
            await send()
        assert time.perf_counter() - start < 3.0
        await _control(comm, f"after {index}")


def test_too_large_messages_fail_at_once_on_the_thread_facade(rmq_uri: str, names: Any) -> None:
    comm = rmq.RmqThreadCommunicator.connect(rmq_uri, **names.options(max_message_size=LIMIT))
    try:
        comm.add_rpc_subscriber(lambda _c, msg: msg, "echo")
        comm.add_task_subscriber(lambda _c, task: task)
        for index, send in enumerate([comm.rpc_send, comm.task_send, comm.broadcast_send]):
            args = ("echo", HUGE) if send == comm.rpc_send else (HUGE,)
            start = time.perf_counter()
            with pytest.raises(kiwipy.MessageTooLarge):
                send(*args)  # type: ignore[operator]
            assert time.perf_counter() - start < 3.0
            _thread_control(comm, f"after {index}")
    finally:
        comm.close()


async def test_bad_names_in_options_are_refused_before_connecting(rmq_uri: str) -> None:
    bad = [
        {"task_queue": ""},
        {"task_queue": "caf\u00e9"},
        {"message_exchange": "x" * 213},
        {"task_exchange": "amq.topic"},
    ]
    for options in bad:
        with pytest.raises(kiwipy.InvalidName):
            await rmq.async_connect(rmq_uri, testing_mode=True, **options)
