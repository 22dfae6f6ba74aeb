"""A broadcast to a thread communicator's subscribers goes from the broker's thread straight
to their workers (:func:`kiwipy._broadcasts.hand_over`), not through the loop, unless tracing
is on; and the dispatcher queue it uses (:meth:`kiwipy._dispatch.Dispatcher.submit_serial`).
That a blocking ``broadcast_send`` still waits for the communicator's own subscribers is the
contract's ``test_blocking_broadcast_send_returns_after_own_subscribers``, which the thread
flavours of the contract run without tracing, so on this path."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kiwipy import _tracing, memory
from kiwipy._dispatch import Dispatcher

from .._waits import block_loop

#: Seconds any wait here may take (every one ends much sooner when things work).
WAIT = 5.0


@pytest.fixture
def pair() -> Iterator[tuple[Any, Any]]:
    """Two thread communicators on one in-process broker."""
    name = f"handover-{uuid.uuid4().hex}"
    sender, receiver = memory.connect(f"memory://{name}"), memory.connect(f"memory://{name}")
    try:
        yield sender, receiver
    finally:
        sender.close()
        receiver.close()
        memory.drop_broker(name)


@pytest.fixture(params=[False, True], ids=["untraced", "traced"])
def tracing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Tracing off (the hand-over is taken) and on (broadcasts go through the loop)."""
    monkeypatch.setattr(_tracing, "ENABLED", request.param)
    return bool(request.param)


def _block(comm: Any) -> threading.Event:
    """Keep *comm*'s loop thread busy until the returned event is set."""
    return block_loop(comm.loop(), WAIT)


def test_a_blocked_loop_does_not_hold_back_broadcasts_without_tracing(
    pair: tuple[Any, Any], tracing: bool
) -> None:
    sender, receiver = pair
    got = threading.Event()
    receiver.add_broadcast_subscriber(lambda _c, body, *_: got.set())
    release = _block(receiver)
    try:
        sender.broadcast_send("hello")
        # handed over: the worker runs it at once; through the loop: not before release
        assert got.wait(0.5 if tracing else WAIT) is not tracing
    finally:
        release.set()
    assert got.wait(WAIT)


def test_failures_are_logged_and_each_subscriber_keeps_its_order(
    pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_tracing, "ENABLED", False)
    sender, receiver = pair
    seen: list[int] = []
    done = threading.Event()

    def subscriber(_comm: Any, body: int, *_: Any) -> None:
        seen.append(body)
        if body == 99:
            done.set()
        if body % 10 == 0:
            raise ValueError(f"bad {body}")

    receiver.add_broadcast_subscriber(subscriber)
    with caplog.at_level(logging.ERROR):
        for body in range(100):
            sender.broadcast_send(body)
        assert done.wait(WAIT)
    assert seen == list(range(100))
    failures = [r for r in caplog.records if "Exception in broadcast receiver" in r.getMessage()]
    assert len(failures) == 10
    assert receiver.broadcast_send("still works")


async def test_submitted_calls_run_in_order_on_a_worker_from_any_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher = Dispatcher(asyncio.get_running_loop(), "test submit", max_workers=2)
    outcomes: list[tuple[bool, Any, bool]] = []
    finished = threading.Event()

    def done(ok: bool, value: Any) -> None:
        outcomes.append((ok, value, dispatcher.in_worker()))
        if value == 4:
            raise RuntimeError("a failing report")  # logged; the calls after it still run
        if len(outcomes) == 6:
            finished.set()

    def fail() -> None:
        raise KeyError("boom")

    def submit_all() -> None:
        for value in range(5):
            dispatcher.submit_serial("key", lambda v=value: v, done)
        dispatcher.submit_serial("key", fail, done)

    try:
        with caplog.at_level(logging.ERROR):
            thread = threading.Thread(target=submit_all)
            thread.start()
            thread.join()
            assert await asyncio.to_thread(finished.wait, WAIT)
    finally:
        dispatcher.close()
    assert [(ok, v) for ok, v, _ in outcomes[:5]] == [(True, v) for v in range(5)]
    assert outcomes[5][0] is False and isinstance(outcomes[5][1], KeyError)
    assert all(on_worker for _, _, on_worker in outcomes)
    assert any("reporting a subscriber's outcome failed" in r.getMessage() for r in caplog.records)


def test_a_communicator_without_broadcast_subscribers_takes_broadcasts_off_the_loop(
    pair: tuple[Any, Any], tracing: bool
) -> None:
    """Nobody to call: the broker's thread is told it is handled, the loop is not woken."""
    _, receiver = pair
    receiver_core = receiver.core
    payload = receiver_core._codec.encode(
        {"body": 1, "sender": None, "subject": None, "correlation_id": None}
    )
    assert receiver_core._broadcasts.on_broadcast_direct(payload) is True
    receiver.add_broadcast_subscriber(lambda *_: None)
    # with a subscriber: handed over without tracing, to the loop with it
    assert receiver_core._broadcasts.on_broadcast_direct(payload) is (not tracing)
