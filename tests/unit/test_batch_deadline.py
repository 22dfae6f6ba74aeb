"""A batch that runs out of time keeps what it wrote (issue 11, item 3).

The RabbitMQ batch sender (``kiwipy.rmq.send._batch``) runs here over a fake session and fake
confirms, so the test controls which windows are written and confirmed and when; the thread
facade gives batches a single send's bound (not the short call timeout) and passes it on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest

import kiwipy
from kiwipy import memory
from kiwipy._thread import ThreadCommunicator
from kiwipy.rmq.send import _batch, _fastpublish
from kiwipy.rmq.send._batch import WINDOW, Pending

#: The batch's own time limit in these tests.
BATCH_TIMEOUT = 0.3


class FakeReplies:
    """The reply queue's bookkeeping only."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[Any]] = {}
        self.changed = asyncio.Event()

    def expect(self, correlation_id: str, *_: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[correlation_id] = future
        self.changed.set()
        return future

    def forget(self, correlation_id: str) -> None:
        self.waiting.pop(correlation_id, None)
        self.changed.set()

    async def until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (at most *timeout* seconds) until ``done()`` holds."""

        async def changes() -> None:
            while not done():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(changes(), timeout)


class FakeSession:
    """A session whose publish channel takes *windows* windows, then is never usable."""

    def __init__(self, windows: int, recovery_timeout: float = 30.0) -> None:
        self.loop = asyncio.get_running_loop()
        # by default far beyond the batch's own limit
        self.options = {"recovery_timeout": recovery_timeout}
        self.windows_left = windows

    async def channel(self, _purpose: str) -> object:
        return self

    def ready_channel(self) -> Optional[object]:
        return self


class Confirms:
    """Stands in for ``_fastpublish``: the first window is confirmed at once, the others
    stay unconfirmed until the test settles them."""

    def __init__(self, session: FakeSession) -> None:
        self.session = session
        self.windows: list[list[asyncio.Future[Any]]] = []

    def can_start(self, _channel: object) -> bool:
        return self.session.windows_left > 0

    def start(
        self, _channel: object, messages: list[Any], drain: bool = False
    ) -> tuple[list[asyncio.Future[Any]], None]:
        self.session.windows_left -= 1
        confirms = [self.session.loop.create_future() for _ in messages]
        if not self.windows:
            for confirm in confirms:
                confirm.set_result(True)
        self.windows.append(confirms)
        return confirms, None


def pending(count: int, reply: bool) -> list[Pending]:
    def one(index: int) -> Pending:
        message = _fastpublish.Outgoing("tasks", "queue", b"body", None, True)  # type: ignore[arg-type]
        return Pending(message, f"id-{index}", ("queue", None) if reply else None)

    return [one(index) for index in range(count)]


@pytest.fixture
def confirms(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Confirms]]:
    made: list[Confirms] = []

    def patch(session: FakeSession) -> Confirms:
        fake = Confirms(session)
        # the module _batch publishes through (the same module object)
        monkeypatch.setattr(_fastpublish, "can_start", fake.can_start)
        monkeypatch.setattr(_fastpublish, "start", fake.start)
        made.append(fake)
        return fake

    yield patch  # type: ignore[misc]


async def test_out_of_time_batch_keeps_the_futures_of_what_it_wrote(confirms: Any) -> None:
    session = FakeSession(windows=2)  # the third window can never be written
    fake = confirms(session)
    replies = FakeReplies()
    total = 2 * WINDOW + 10
    started = time.monotonic()
    with pytest.raises(kiwipy.BatchSendError) as caught:
        await _batch._send(
            session,  # type: ignore[arg-type]
            replies,  # type: ignore[arg-type]
            pending(total, reply=True),
            per_call=(),
            timeout=BATCH_TIMEOUT,
        )
    assert time.monotonic() - started < 5.0  # its own limit, not recovery_timeout (30 s)
    futures, errors = caught.value.futures, caught.value.errors
    confirmed = range(WINDOW)
    unconfirmed = range(WINDOW, 2 * WINDOW)
    unsent = range(2 * WINDOW, total)
    assert all(index not in errors and futures[index] is not None for index in confirmed)
    for index in unconfirmed:  # written: may have gone out, so the future is kept
        assert isinstance(errors[index], kiwipy.TimeoutError)
        assert futures[index] is replies.waiting[f"id-{index}"]
    for index in unsent:
        assert isinstance(errors[index], kiwipy.DeliveryFailed)
        assert "not sent" in str(errors[index])
        assert futures[index] is None and f"id-{index}" not in replies.waiting

    # A written message the broker refuses later fails its kept future; one it takes keeps
    # waiting for its reply.
    refused, taken = fake.windows[1][0], fake.windows[1][1]
    refused.set_exception(kiwipy.PublishNacked("nacked"))
    taken.set_result(True)
    await asyncio.sleep(0)
    with pytest.raises(kiwipy.PublishNacked):
        futures[WINDOW].result()
    assert f"id-{WINDOW}" not in replies.waiting
    assert not futures[WINDOW + 1].done() and f"id-{WINDOW + 1}" in replies.waiting


async def test_no_confirm_within_recovery_timeout_keeps_the_future(confirms: Any) -> None:
    """Without a batch timeout, a confirm missing after ``recovery_timeout`` stops the batch,
    but the message may have gone out: its future is kept, as when the batch runs out."""
    session = FakeSession(windows=3, recovery_timeout=0.2)
    fake = confirms(session)
    replies = FakeReplies()
    with pytest.raises(kiwipy.BatchSendError) as caught:
        await _batch._send(
            session,  # type: ignore[arg-type]
            replies,  # type: ignore[arg-type]
            pending(2 * WINDOW, reply=True),
            per_call=(),
        )
    futures, errors = caught.value.futures, caught.value.errors
    assert sorted(errors) == list(range(WINDOW, 2 * WINDOW))
    assert all(isinstance(errors[i], kiwipy.TimeoutError) for i in errors)
    assert all(futures[i] is replies.waiting[f"id-{i}"] for i in range(2 * WINDOW))
    fake.windows[1][0].cancel()  # the channel closed: that one can never be answered
    await asyncio.sleep(0)
    with pytest.raises(kiwipy.ConnectionLost):
        futures[WINDOW].result()


async def test_batch_within_its_time_is_unchanged(confirms: Any) -> None:
    session = FakeSession(windows=1)
    confirms(session)
    futures = await _batch._send(
        session,  # type: ignore[arg-type]
        FakeReplies(),  # type: ignore[arg-type]
        pending(5, reply=False),
        per_call=(),
        timeout=BATCH_TIMEOUT,
    )
    assert futures == [None] * 5


async def test_cancelling_the_caller_still_cancels_the_batch(confirms: Any) -> None:
    session = FakeSession(windows=2)
    confirms(session)
    replies = FakeReplies()
    batch = asyncio.ensure_future(
        _batch._send(
            session,  # type: ignore[arg-type]
            replies,  # type: ignore[arg-type]
            pending(2 * WINDOW, reply=True),
            per_call=(),
            timeout=30.0,
        )
    )
    await replies.until(lambda: len(replies.waiting) == 2 * WINDOW)  # both windows written
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    # the caller holds no future: nothing is awaited for it
    await replies.until(lambda: not replies.waiting)


# The thread facade


class SlowBatchCore(memory.AsyncMemoryCommunicator):
    """A core whose batches take longer than the facade's call timeout (as a batch waiting
    for a reconnection does), and that records the timeout it was given."""

    delay = 0.0
    given: list[Optional[float]] = []

    async def task_send_many(
        self, tasks: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> list[Optional[asyncio.Future[Any]]]:
        self.given.append(timeout)
        await asyncio.sleep(self.delay)
        return await super().task_send_many(tasks, no_reply, timeout=timeout)


@pytest.fixture
def slow_facade(unique_name: str) -> Iterator[ThreadCommunicator]:
    async def create() -> memory.AsyncMemoryCommunicator:
        core = SlowBatchCore(memory.get_broker(unique_name))
        await core.connect()
        return core

    facade = ThreadCommunicator(create, timeout=0.2)
    facade._bridge.send_timeout = 2.0  # what the RabbitMQ facade sets from recovery_timeout
    yield facade
    facade.close()
    memory.drop_broker(unique_name)


def test_facade_gives_batches_a_single_sends_bound(slow_facade: ThreadCommunicator) -> None:
    SlowBatchCore.delay = 0.6  # > the 0.2 s call timeout, < the 2 s send bound
    SlowBatchCore.given.clear()
    assert slow_facade.task_send_many(["a", "b"], no_reply=True) == [None, None]
    # the core enforces the bound itself, so it can report what went out
    assert SlowBatchCore.given == [pytest.approx(2.0 + 2 * 0.001)]
