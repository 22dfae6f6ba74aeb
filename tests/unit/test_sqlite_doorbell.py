"""Doorbells (:mod:`kiwipy.sqlite._doorbell`): a ring is not lost when the receiver's queue is
full of messages, yet a receiver that makes no room is not waited for twice; and who is rung
for a task."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import kiwipy
from kiwipy.sqlite import _doorbell
from kiwipy.sqlite._doorbell import Doorbell


def _full(receiver: Doorbell, sender: Doorbell) -> int:
    """Fill *receiver*'s queue with messages. :returns: how many it took."""
    sent = 0
    while sender.send(receiver.name, _doorbell.ANSWER, {"c": str(sent)}, b"x"):
        sent += 1
        assert sent < 100_000, "the queue never filled"
    return sent


def _bells() -> tuple[Doorbell, Doorbell]:
    return Doorbell(f"test-{uuid.uuid4().hex}"), Doorbell(f"test-{uuid.uuid4().hex}")


def test_a_ring_waits_for_room_in_a_queue_full_of_messages() -> None:
    receiver, sender = _bells()
    try:
        queued = _full(receiver, sender)
        drained: list[tuple[set[bytes], int]] = []

        def pump() -> None:  # the receiver's pump comes round a little later
            time.sleep(_doorbell.RING_WAIT / 5)
            kinds, messages = receiver.drain()
            drained.append((kinds, len(messages)))

        thread = threading.Thread(target=pump)
        thread.start()
        assert sender.ring(receiver.name, _doorbell.RPC)
        thread.join()
        kinds, messages = receiver.drain()
        assert drained[0][1] == queued
        assert _doorbell.RPC in kinds | drained[0][0], "the ring was dropped"
    finally:
        receiver.close()
        sender.close()


def test_a_receiver_that_makes_no_room_is_waited_for_once() -> None:
    receiver, sender = _bells()
    try:
        _full(receiver, sender)
        start = time.monotonic()
        assert sender.ring(receiver.name, _doorbell.RPC)
        first = time.monotonic() - start
        start = time.monotonic()
        assert sender.ring(receiver.name, _doorbell.RPC)
        second = time.monotonic() - start
        assert first >= _doorbell.RING_WAIT * 0.9
        assert second < _doorbell.RING_WAIT / 2
        receiver.drain()  # room again: rings reach it at once and it is waited for again
        assert sender.ring(receiver.name, _doorbell.TASK)
        assert receiver.drain()[0] == {_doorbell.TASK}
        _full(receiver, sender)
        start = time.monotonic()
        sender.ring(receiver.name, _doorbell.RPC)
        assert time.monotonic() - start >= _doorbell.RING_WAIT * 0.9
    finally:
        receiver.close()
        sender.close()


def test_a_ring_to_a_gone_doorbell_says_so() -> None:
    receiver, sender = _bells()
    name = receiver.name
    receiver.close()
    try:
        assert not sender.ring(name, _doorbell.RPC)
    finally:
        sender.close()


def test_a_process_rings_its_own_pump_for_tasks_only_if_it_takes_them(tmp_path: Any) -> None:
    """A sender with no consumer and no pull of the queue leaves its pump asleep (it would
    only look for tasks to claim); with a consumer, its pump is rung."""
    comm = kiwipy.connect(f"sqlite:///{tmp_path / 'rings.db'}")
    peers = comm.core.broker._peers
    rung: list[bytes] = []
    ring_self = peers.ring_self

    def recording(kind: bytes) -> None:
        rung.append(kind)
        ring_self(kind)

    peers.ring_self = recording
    try:
        comm.task_send(1, no_reply=True)
        assert _doorbell.TASK not in rung
        done = threading.Event()
        comm.add_task_subscriber(lambda _c, task: done.set())
        rung.clear()
        comm.task_send(2, no_reply=True)
        assert _doorbell.TASK in rung
        assert done.wait(5.0)
    finally:
        comm.close()
