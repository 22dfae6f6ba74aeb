"""What the lease tests share: names, scaled-down lease settings, workers and waiting."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from kiwipy import rmq

from .._names import BrokerNames
from .broker import PrivateBroker

ROOT = Path(__file__).parents[2]

#: Lease settings scaled to the ``timeout_broker`` (consumer_timeout 3 s, tick 1 s: a held
#: delivery's channel is closed ~4 s after delivery): convert after 1 s, check every 2 s.
LEASES: dict[str, Any] = {
    "task_lease_after": 1.0,
    "lease_interval": 2.0,
    "lease_strikes": 2,
    "lease_check_timeout": 1.0,
}


class Names(BrokerNames):
    """Exchange and queue names of one test, with quick lease options."""

    def __init__(self) -> None:
        super().__init__("kl", **LEASES)


async def connect(broker: PrivateBroker, names: Names, **extra: Any) -> rmq.RmqCommunicator:
    return await rmq.async_connect(broker.url, **names.options(**extra))


async def outcome(future: Optional[asyncio.Future[Any]], timeout: float) -> Any:
    """:returns: the outcome of a task sent with a reply wanted (waiting up to *timeout*)."""
    assert future is not None
    return await asyncio.wait_for(future, timeout)


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait until *condition* holds. :returns: when it first held (``time.time()``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)
    return time.time()


def messages(broker: PrivateBroker, *queues: str) -> dict[str, int]:
    """Messages (ready and unacknowledged) in *queues*, by name; missing queues count 0."""
    found = {q.name: q.messages for q in broker.list_queues()}
    return {name: found.get(name, 0) for name in queues}


async def drained(broker: PrivateBroker, names: Names, timeout: float) -> None:
    """Wait until the task queue and its lease queue are empty: every lease copy of a
    finished task was dropped by a check."""
    queues = (names.task_queue, f"{names.task_queue}.leases")
    deadline = time.monotonic() + timeout
    while True:
        counts = await asyncio.to_thread(messages, broker, *queues)
        if not any(counts.values()):
            return
        assert time.monotonic() < deadline, f"still queued after {timeout} s: {counts}"
        await asyncio.sleep(0.5)


class WorkerProcess:
    """A ``tests.faults._lease_worker`` process and its log."""

    def __init__(self, broker: PrivateBroker, options: dict[str, Any], log: Path) -> None:
        self.log = log
        argv = [sys.executable, "-m", "tests.faults._lease_worker", broker.url]
        argv += [json.dumps(options), str(log)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.stderr = log.with_suffix(".stderr")
        with open(self.stderr, "wb") as stderr:
            self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=stderr)

    def lines(self, kind: str) -> list[list[str]]:
        if not self.log.exists():
            return []
        rows = [line.split(" ", 3) for line in self.log.read_text().splitlines()]
        return [row for row in rows if row[0] == kind]

    def logged(self, text: str) -> Optional[float]:
        """:returns: when a log line containing *text* was written, if one was."""
        for row in self.lines("log"):
            if text in row[2] + " " + (row[3] if len(row) > 3 else ""):
                return float(row[1])
        return None

    def kill(self) -> float:
        """SIGKILL the worker. :returns: when."""
        self.process.kill()
        self.process.wait(10)
        return time.time()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
