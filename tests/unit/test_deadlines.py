"""Deadlines (issue 16): the transport-neutral rules of ``kiwipy._deadlines`` and what a
request with and without a deadline puts on the wire."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any
from unittest import mock

import pytest

import kiwipy
from kiwipy import _deadlines, memory
from kiwipy.core import DEFAULT_TASK_QUEUE
from kiwipy.rmq.send import _outgoing

from .._waits import wait_until


def test_deadline_exceeded_is_a_kiwi_error_and_a_timeout_error() -> None:
    error = kiwipy.DeadlineExceeded("late")
    assert isinstance(error, kiwipy.KiwiError)
    assert isinstance(error, TimeoutError)
    assert isinstance(error, concurrent.futures.TimeoutError)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_a_timeout_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        _deadlines.check_timeout(bad)


@pytest.mark.parametrize("bad", ["1", True, [1]])
def test_a_timeout_must_be_a_number(bad: Any) -> None:
    with pytest.raises(TypeError, match="timeout"):
        _deadlines.check_timeout(bad)


def test_the_header_keeps_the_deadline_to_the_millisecond() -> None:
    at = time.time() + 0.25
    value = _deadlines.header_value(at)
    assert isinstance(value, str)
    for carried in (value, value.encode()):
        restored = _deadlines.from_headers({_deadlines.HEADER: carried})
        # never later than the caller's own deadline: rounded down
        assert restored is not None and at - 0.001 < restored <= at


@pytest.mark.parametrize("headers", [None, {}, {"x-kiwipy-deadline": "soon"}, {"x": 1}])
def test_no_or_a_malformed_deadline_header_is_no_deadline(headers: Any) -> None:
    assert _deadlines.from_headers(headers) is None


def test_expiration_is_whole_milliseconds_at_least_one() -> None:
    assert _deadlines.expiration(0.5) == "500"
    assert _deadlines.expiration(0.0001) == "1"


def _target() -> Any:
    replies = mock.Mock()
    replies.name = "reply-queue"
    return _outgoing.TaskTarget(mock.Mock(), "exchange", "queue", replies, None)


def test_a_task_without_timeout_carries_no_deadline() -> None:
    message, _ = _outgoing.task(_target(), b"body")
    props = message.properties
    assert props.expiration is None
    assert _deadlines.HEADER not in (props.headers or {})


def test_a_task_with_timeout_carries_its_deadline_and_expiration() -> None:
    before = time.time()
    message, _ = _outgoing.task(_target(), b"body", 2.0)
    props = message.properties
    assert props.expiration == "2000"
    at = _deadlines.from_headers(props.headers)
    assert at is not None
    assert before + 2.0 - 0.001 <= at <= time.time() + 2.0 + 0.001


async def test_deadline_is_none_outside_a_handler() -> None:
    assert kiwipy.deadline() is None
    with _deadlines.running_until(time.time() + 10):
        left = kiwipy.deadline()
        assert left is not None and 9 < left <= 10
    assert kiwipy.deadline() is None


async def test_a_pending_reply_keeps_the_deadline() -> None:
    """A future answered with 'pending' resolves to an inner future: that one fails."""
    loop = asyncio.get_running_loop()
    outer: asyncio.Future[Any] = loop.create_future()
    _deadlines.arm(outer, 0.05)
    inner: asyncio.Future[Any] = loop.create_future()
    outer.set_result(inner)
    with pytest.raises(kiwipy.DeadlineExceeded):
        await asyncio.wait_for(inner, 2)


async def test_an_expired_task_found_on_arrival_is_parked_not_run() -> None:
    """The arrival check itself (the broker's expiry usually gets there first)."""
    from kiwipy.rmq.receive._incoming import TaskResponder

    responder = mock.Mock(spec=TaskResponder)
    responder.park = mock.AsyncMock()
    responder._expired = TaskResponder._expired  # the real check
    message = mock.Mock()
    message.header.properties.headers = {_deadlines.HEADER: _deadlines.header_value(1.0)}
    assert await TaskResponder.decode(responder, message) is None
    (_, reason, error), _ = responder.park.call_args
    assert reason == "deadline-exceeded"
    assert isinstance(error, kiwipy.DeadlineExceeded)


async def test_a_task_cut_short_at_its_deadline_is_acked_without_a_reply() -> None:
    """Its sender's future fails with DeadlineExceeded on its own at that moment; a reply
    saying the same would race it and could arrive first as a RemoteException."""
    name = f"cut-short-{time.monotonic_ns()}"
    worker = await memory.async_connect(f"memory://{name}")
    sender = await memory.async_connect(f"memory://{name}")
    replies: list[Any] = []
    reply = worker._sender.reply

    def recording(message: Any, response: Any) -> bool:
        replies.append(response)
        return bool(reply(message, response))

    worker._sender.reply = recording  # type: ignore[method-assign]

    async def slow(_comm: Any, task: Any) -> Any:
        await asyncio.Event().wait()  # never set: still running at the deadline, cut short

    try:
        await worker.add_task_subscriber(slow)
        future = await sender.task_send(1, timeout=0.2)
        with pytest.raises(kiwipy.DeadlineExceeded):
            await asyncio.wait_for(future, 5)
        broker, queue = worker.broker, DEFAULT_TASK_QUEUE

        acked = lambda: broker.queue_stats(queue) == (0, 0)  # noqa: E731
        await asyncio.to_thread(wait_until, acked, "the task acknowledged", 5.0)
        assert replies == []
    finally:
        await sender.disconnect()
        await worker.disconnect()
        memory.drop_broker(name)
