"""A load run: three worker processes, a few thousand tasks, workers SIGKILLed at random and
started again. Every task is done at least once and answered; the duplicates (tasks a killed
worker finished but had not acknowledged) are reported and bounded by the prefetch."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from kiwipy import rmq

from ._scenario import SHARED_URL, CompletionLog, Names, WorkerProcess, report, wait_until

TASKS = 4000
WORKERS = 3
PREFETCH = 10
KILLS = 6
WAIT = 120.0
pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Fleet:
    """The worker processes, replaced when killed."""

    def __init__(self, names: Names, log: CompletionLog) -> None:
        self.options = names.options(task_prefetch_count=PREFETCH)
        self.log = log
        self.workers: list[WorkerProcess] = []
        self.retired: list[WorkerProcess] = []
        self.kills = 0
        self.in_hand_at_kill = 0

    async def start(self) -> None:
        worker = WorkerProcess(SHARED_URL, self.options, self.log.path)
        self.workers.append(worker)
        await worker.ready()

    async def chaos(self, until_done: asyncio.Event, rng: random.Random) -> None:
        """Kill a random worker every 0.5-1.5 s and start a new one, *KILLS* times."""
        while self.kills < KILLS and not until_done.is_set():
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            victim = self.workers.pop(rng.randrange(len(self.workers)))
            self.in_hand_at_kill += len(self.log.in_hand(victim.pid))
            victim.kill()
            self.retired.append(victim)
            self.kills += 1
            await self.start()

    def stop(self) -> None:
        for worker in self.workers + self.retired:
            worker.stop()


async def test_load_with_workers_killed_at_random(tmp_path) -> None:
    names = Names()
    log = CompletionLog(tmp_path / "completions")
    fleet = Fleet(names, log)
    requester = await rmq.async_connect(SHARED_URL, **names.options())
    rng = random.Random(4)
    try:
        await asyncio.gather(*(fleet.start() for _ in range(WORKERS)))
        began = time.monotonic()
        done_event = asyncio.Event()
        chaos = asyncio.ensure_future(fleet.chaos(done_event, rng))
        ids = [f"L{n}" for n in range(TASKS)]
        futures = []
        for start in range(0, TASKS, 100):
            batch = ids[start : start + 100]
            futures += await asyncio.gather(
                *(requester.task_send({"id": i, "sleep": 0.05}) for i in batch)
            )
            await asyncio.sleep(0.02)  # a backlog builds: every worker has its prefetch in hand
        sent = time.monotonic() - began
        results = await asyncio.wait_for(asyncio.gather(*futures), WAIT)
        done_event.set()
        await asyncio.wait_for(chaos, WAIT)
        elapsed = time.monotonic() - began
        await wait_until(lambda: not log.done().missing(ids), 10, "every task done")
        done = log.done()
        per_worker = {}
        for event, _ident, pid in log.lines():
            if event == "done":
                per_worker[pid] = per_worker.get(pid, 0) + 1
        report(
            "load-random-sigkill",
            sent=TASKS,
            confirmed=len(futures),
            done_at_least_once=len(done.seen),
            replies=len(results),
            lost=len(done.missing(ids)),
            duplicates=done.duplicates,
            duplicate_bound=fleet.kills * PREFETCH,
            kills=fleet.kills,
            in_hand_at_kills=fleet.in_hand_at_kill,
            worker_processes=len(per_worker),
            send_s=round(sent, 2),
            total_s=round(elapsed, 2),
        )
        assert results == ids
        assert not done.missing(ids)
        assert fleet.kills >= 3
        assert done.duplicates <= fleet.kills * PREFETCH
    finally:
        fleet.stop()
        await requester.disconnect()
