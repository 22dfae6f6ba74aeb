"""The checker's decision table on the wire: a race for one lease, a released lease, and an
owner that is connected but silent. Lease copies are forged here (a lease of an owner that is
not a worker of this library) to put each case in place at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import aiormq
import pytest
from pamqp import commands as spec

import kiwipy
from kiwipy.rmq.leases._leases import LEASE_HEADER, OWNER_HEADER, STRIKES_HEADER, worker_queue

from ._lease_support import Names, connect, outcome, wait_for
from .broker import PrivateBroker

pytestmark = pytest.mark.slow

FAST = {"task_lease_after": 0.3, "lease_interval": 1.0, "lease_check_timeout": 0.5}


class Runs:
    def __init__(self) -> None:
        self.runs: list[tuple[Any, float]] = []

    async def __call__(self, _communicator: Any, task: Any) -> Any:
        self.runs.append((task, time.monotonic()))
        await asyncio.sleep(0.2)
        return task


async def forge(broker: PrivateBroker, queue: str, owner: str, lease_id: str, strikes: int) -> None:
    """Put a lease copy of a task ``"forged"`` straight into the task queue."""
    connection = await aiormq.connect(broker.url)
    try:
        channel = await connection.channel()
        headers: dict[str, Any] = {OWNER_HEADER: owner, LEASE_HEADER: lease_id}
        headers[STRIKES_HEADER] = strikes
        props = spec.Basic.Properties(headers=headers, delivery_mode=2, message_id=lease_id)
        await channel.basic_publish(b"- forged\n- true\n", routing_key=queue, properties=props)
    finally:
        await connection.close()


async def test_two_checkers_race_for_one_lease(timeout_broker: PrivateBroker) -> None:
    """Two copies of one lease of a dead owner reach two workers at once: the claim lets
    exactly one of them run the task."""
    names = Names()
    workers = [await connect(timeout_broker, names, **FAST) for _ in range(2)]
    runs = Runs()
    try:
        for worker in workers:
            await worker.add_task_subscriber(runs)
        lease_id = uuid.uuid4().hex
        for _ in range(2):
            await forge(timeout_broker, names.task_queue, "dead-owner", lease_id, strikes=1)
        await wait_for(lambda: bool(runs.runs), 10, "a take-over")
        await asyncio.sleep(3 * FAST["lease_interval"])  # any second copy was checked by now
        assert [task for task, _ in runs.runs] == ["forged"]
    finally:
        for worker in workers:
            await worker.disconnect()


async def test_released_lease_is_taken_over_at_once(
    timeout_broker: PrivateBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A pull-mode user requeues a task it leased: the next check runs it elsewhere without
    waiting for strikes."""
    caplog.set_level(logging.INFO, "kiwipy")
    names = Names()
    owner = await connect(timeout_broker, names, **FAST)
    other = await connect(timeout_broker, names, **FAST)
    try:
        queue = await owner.task_queue(names.task_queue)
        future = await other.task_send("given up")
        async with queue.next_task(timeout=5) as task:
            assert task is not None
            result = task.process()
            await wait_for(
                lambda: any("converted into lease" in r.getMessage() for r in caplog.records),
                10,
                "the task becomes a lease",
            )
            await task.requeue()
            del result
        runs = Runs()
        began = time.monotonic()
        await other.add_task_subscriber(runs)
        assert await outcome(future, 10) == "given up"
        assert [task for task, _ in runs.runs] == ["given up"]
        assert runs.runs[0][1] - began < 2 * FAST["lease_interval"]  # no strikes needed
    finally:
        await other.disconnect()
        await owner.disconnect()


async def test_silent_owner_is_struck_out(timeout_broker: PrivateBroker) -> None:
    """An owner that holds its check queue but never answers (stalled) is treated as dead
    after ``lease_strikes`` check timeouts."""
    names = Names()
    stalled = await aiormq.connect(timeout_broker.url)
    worker = await connect(timeout_broker, names, **FAST)
    try:
        channel = await stalled.channel()
        await channel.queue_declare(worker_queue("stalled"), exclusive=True)  # nobody reads it
        runs = Runs()
        await worker.add_task_subscriber(runs)
        began = time.monotonic()
        await forge(timeout_broker, names.task_queue, "stalled", uuid.uuid4().hex, strikes=0)
        await wait_for(lambda: bool(runs.runs), 15, "a take-over")
        took = runs.runs[0][1] - began
        bound = 2 * (FAST["lease_interval"] + FAST["lease_check_timeout"])
        assert 2 * FAST["lease_check_timeout"] <= took <= bound + 1.0, took
    finally:
        await worker.disconnect()
        await stalled.close()


async def test_a_taken_over_task_given_back_is_not_lost(timeout_broker: PrivateBroker) -> None:
    """A worker takes over an orphaned lease, then every subscriber of it rejects the task:
    the copy goes back, its claim is let go, and a worker that accepts it runs it."""
    names = Names()
    rejecting = await connect(timeout_broker, names, **FAST, reject_backoff=0.05)
    accepting = None
    rejected: list[Any] = []

    def reject(_communicator: Any, task: Any) -> None:
        rejected.append(task)
        raise kiwipy.TaskRejected("not here")

    try:
        await rejecting.add_task_subscriber(reject)
        await forge(timeout_broker, names.task_queue, "dead-owner", uuid.uuid4().hex, strikes=1)
        await wait_for(lambda: bool(rejected), 10, "the take-over is rejected")
        accepting = await connect(timeout_broker, names, **FAST)
        runs = Runs()
        await accepting.add_task_subscriber(runs)
        await wait_for(lambda: bool(runs.runs), 20, "another worker runs it")
        assert [task for task, _ in runs.runs] == ["forged"]
    finally:
        await rejecting.disconnect()
        if accepting is not None:
            await accepting.disconnect()
