"""Issue 5: tasks that run far longer than the broker's ``consumer_timeout``.

All on the ``timeout_broker`` node (consumer_timeout 3 s, checked every 1 s: the channel of a
consumer holding a delivery is closed ~4 s after the delivery), with lease settings scaled
down to match (:data:`tests.faults._lease_support.LEASES`: convert after 1 s, check every
2 s, take over after 2 failed checks).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from kiwipy import rmq
from kiwipy.rmq._options import resolve_options
from kiwipy.rmq.leases._leases import LeaseSettings

from ._lease_support import LEASES, Names, WorkerProcess, connect, drained, outcome, wait_for
from .broker import PrivateBroker

pytestmark = pytest.mark.slow

TIMEOUT = 3.0  # the timeout_broker's consumer_timeout, seconds
SETTINGS = LeaseSettings.from_options(resolve_options(LEASES))


class Runs:
    """A subscriber that records each run of each task, and how it ended."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started: list[tuple[Any, float]] = []
        self.ended: list[Any] = []

    async def __call__(self, _communicator: Any, task: dict[str, Any]) -> dict[str, Any]:
        self.started.append((task["id"], time.time()))
        await asyncio.sleep(task["seconds"])
        self.ended.append(task["id"])
        return {"id": task["id"], "by": self.name}


def timeouts_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "consumer_timeout (" in r.getMessage()]


def leases_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "converted into lease" in r.getMessage()]


async def test_task_five_times_the_timeout_completes_once(
    timeout_broker: PrivateBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "kiwipy")
    names = Names()
    worker, sender = await connect(timeout_broker, names), await connect(timeout_broker, names)
    try:
        runs = Runs("worker")
        await worker.add_task_subscriber(runs)
        began = time.monotonic()
        future = await sender.task_send({"id": 1, "seconds": 5 * TIMEOUT})
        assert await outcome(future, 5 * TIMEOUT + 10) == {"id": 1, "by": "worker"}
        assert time.monotonic() - began >= 5 * TIMEOUT
        assert [task for task, _ in runs.started] == [1]  # once, never restarted
        assert len(leases_logged(caplog)) == 1
        assert timeouts_logged(caplog) == []  # the broker never had to close the channel
        await drained(timeout_broker, names, 3 * SETTINGS.interval)  # the lease was dropped
        assert [task for task, _ in runs.started] == [1]
    finally:
        await sender.disconnect()
        await worker.disconnect()


async def test_channel_closed_for_a_delivery_timeout_never_runs_it_twice(
    timeout_broker: PrivateBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """With leases after 20 s, far too close to the 3 s timeout, the broker closes the channel
    and redelivers the task while it runs: the redelivery is folded into the running task."""
    caplog.set_level(logging.INFO, "kiwipy")
    names = Names()
    worker = await connect(timeout_broker, names, task_lease_after=20.0)
    sender = await connect(timeout_broker, names)
    try:
        runs = Runs("worker")
        await worker.add_task_subscriber(runs)
        future = await sender.task_send({"id": 2, "seconds": 2 * TIMEOUT})
        assert await outcome(future, 20) == {"id": 2, "by": "worker"}
        assert [task for task, _ in runs.started] == [2]
        warnings = timeouts_logged(caplog)
        assert len(warnings) == 1 and "3000 ms" in warnings[0]
        assert any("redelivered while it runs here" in r.getMessage() for r in caplog.records)
        await drained(timeout_broker, names, 3 * SETTINGS.interval)
        # The consumer was restored: a new task is taken at once.
        future = await sender.task_send({"id": 3, "seconds": 0})
        assert await outcome(future, 10) == {"id": 3, "by": "worker"}
    finally:
        await sender.disconnect()
        await worker.disconnect()


async def test_killed_worker_is_taken_over(timeout_broker: PrivateBroker, tmp_path: Path) -> None:
    names = Names()
    doomed = WorkerProcess(timeout_broker, names.options(), tmp_path / "doomed.log")
    sender = await connect(timeout_broker, names)
    survivor = None
    try:
        await wait_for(lambda: bool(doomed.lines("ready")), 20, "the worker process starts")
        future = await sender.task_send({"id": 4, "seconds": 8.0})
        await wait_for(lambda: bool(doomed.lines("start")), 10, "the worker starts the task")
        await wait_for(lambda: doomed.logged("converted into lease") is not None, 5, "a lease")
        await asyncio.sleep(1.0)  # mid-run, and at least one check answered 'running'
        survivor = await connect(timeout_broker, names)
        runs = Runs("survivor")
        await survivor.add_task_subscriber(runs)
        killed_at = doomed.kill()
        result = await outcome(future, 30)
        assert result == {"id": 4, "by": "survivor"}
        takeover = runs.started[0][1] - killed_at
        # A check per interval, each waiting at most the check timeout, until 2 have failed.
        assert takeover <= SETTINGS.takeover_bound + 1.0, takeover
        print(f"\ntake-over {takeover:.2f} s after SIGKILL (bound {SETTINGS.takeover_bound} s)")
        assert len(doomed.lines("start")) == 1 and doomed.lines("end") == []
        assert [task for task, _ in runs.started] == [4]  # two runs in all, one completed
        await drained(timeout_broker, names, 3 * SETTINGS.interval)
        assert [task for task, _ in runs.started] == [4]
    finally:
        doomed.stop()
        await sender.disconnect()
        if survivor is not None:
            await survivor.disconnect()


async def test_broker_restart_mid_lease_loses_nothing(
    timeout_broker: PrivateBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "kiwipy")
    names = Names()
    worker, sender = await connect(timeout_broker, names), await connect(timeout_broker, names)
    try:
        runs = Runs("worker")
        await worker.add_task_subscriber(runs)
        future = await sender.task_send({"id": 5, "seconds": 12.0})
        await wait_for(lambda: bool(runs.started), 10, "the task starts")
        await wait_for(lambda: bool(leases_logged(caplog)), 10, "the task becomes a lease")
        await asyncio.to_thread(timeout_broker.restart)
        assert await outcome(future, 60) == {"id": 5, "by": "worker"}
        assert [task for task, _ in runs.started] == [5]
        await drained(timeout_broker, names, 4 * SETTINGS.interval)
        assert [task for task, _ in runs.started] == [5]
    finally:
        await sender.disconnect()
        await worker.disconnect()


async def test_pull_mode_task_is_leased(timeout_broker: PrivateBroker) -> None:
    names = Names()
    worker, sender = await connect(timeout_broker, names), await connect(timeout_broker, names)
    try:
        queue = await worker.task_queue(names.task_queue)
        future = await sender.task_send("pulled")
        async with queue.next_task(timeout=5) as task:
            assert task is not None
            async with task.processing() as result:
                await asyncio.sleep(2 * TIMEOUT)  # past the consumer timeout
                result.set_result(f"done by {os.getpid()}")
        assert await outcome(future, 10) == f"done by {os.getpid()}"
        # The lease copy comes back to the task queue within one interval; the next pull
        # checks it (this worker owns it: 'finished') and drops it instead of returning it.
        await asyncio.sleep(SETTINGS.interval + 0.5)
        async with queue.next_task(fail=False, timeout=1.0) as again:
            assert again is None
        await drained(timeout_broker, names, 3 * SETTINGS.interval)
    finally:
        await sender.disconnect()
        await worker.disconnect()


async def test_a_lease_keeps_its_prefetch_slot(timeout_broker: PrivateBroker) -> None:
    """With ``task_prefetch_count=1`` a worker runs one task at a time, leased or not."""
    names = Names()
    worker = await connect(timeout_broker, names, task_prefetch_count=1)
    sender = await connect(timeout_broker, names)
    try:
        runs = Runs("worker")
        await worker.add_task_subscriber(runs)
        long = await sender.task_send({"id": "long", "seconds": 4.0})
        await wait_for(lambda: bool(runs.started), 10, "the long task starts")
        short = await sender.task_send({"id": "short", "seconds": 0})
        assert await outcome(long, 15) == {"id": "long", "by": "worker"}
        assert await outcome(short, 10) == {"id": "short", "by": "worker"}
        assert runs.ended == ["long", "short"]  # the short one waited for the slot
    finally:
        await sender.disconnect()
        await worker.disconnect()


async def test_leases_off_is_kiwipy09(timeout_broker: PrivateBroker) -> None:
    """``task_lease_after=None``: no lease queue, the delivery is held as in kiwipy 0.9."""
    names = Names()
    worker = await connect(timeout_broker, names, task_lease_after=None)
    try:
        runs = Runs("worker")
        await worker.add_task_subscriber(runs)
        future = await worker.task_send({"id": 6, "seconds": 0.1})
        assert await outcome(future, 10) == {"id": 6, "by": "worker"}
        queues = {q.name for q in await asyncio.to_thread(timeout_broker.list_queues)}
        assert f"{names.task_queue}.leases" not in queues
    finally:
        await worker.disconnect()


def test_settings_make_sense_for_the_node() -> None:
    # The conversion must come well before the node closes a channel (timeout + one tick).
    assert SETTINGS.after is not None and SETTINGS.after + 1.0 < TIMEOUT
    assert isinstance(rmq.RmqCommunicator, type)
