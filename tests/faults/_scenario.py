"""Shared pieces of the fault scenarios: names, counts, connection events, worker processes.

Every scenario counts what it sent, what the broker confirmed, what arrived and how often,
and reports its figures with :func:`report` (printed; also appended as one JSON line to the
file named by ``KIWIPY_FAULT_FIGURES``, when set, to collect them across a run).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable, Optional

from .._names import BrokerNames

SHARED_URL = os.environ.get("KIWIPY_TEST_RMQ_URI", "amqp://guest:guest@127.0.0.1:5672/")
WORKER_SCRIPT = Path(__file__).with_name("_worker_proc.py")


class Names(BrokerNames):
    """Broker names no other test uses (in testing mode unless told otherwise)."""

    def __init__(self, testing_mode: bool = True) -> None:
        # this library's task queue arguments (with dead-lettering) in testing mode too
        super().__init__("kf", testing_mode=testing_mode, task_queue_compat=False)


def report(scenario: str, **figures: Any) -> dict[str, Any]:
    """Print *scenario*'s figures (and append them to ``$KIWIPY_FAULT_FIGURES``)."""
    line = {"scenario": scenario, **figures}
    print(f"\nFIGURES {json.dumps(line)}")
    target = os.environ.get("KIWIPY_FAULT_FIGURES")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps(line) + "\n")
    return line


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll *condition* until true; :returns: the seconds it took. Fails after *timeout*."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - began


class Events:
    """Records connection events (a connection callback) with the time each arrived."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str, str]] = []

    def __call__(self, event: str) -> None:
        self.log.append((time.monotonic(), str(event), getattr(event, "detail", "")))

    def count(self, name: str) -> int:
        return sum(1 for _, event, _ in self.log if event == name)

    def names(self) -> list[str]:
        return [event for _, event, _ in self.log]

    def first(self, name: str, after: float = 0.0) -> Optional[float]:
        return next((at for at, event, _ in self.log if event == name and at >= after), None)

    def detail(self, name: str) -> str:
        return next((detail for _, event, detail in self.log if event == name), "")

    async def wait_for(self, name: str, timeout: float, after: float = 0.0) -> float:
        """:returns: when *name* happened (at or after *after*), waiting up to *timeout*."""
        await wait_until(lambda: self.first(name, after) is not None, timeout, name)
        at = self.first(name, after)
        assert at is not None
        return at


class Tally:
    """How many times each id arrived."""

    def __init__(self) -> None:
        self.seen: collections.Counter[str] = collections.Counter()

    def add(self, ident: str) -> None:
        self.seen[ident] += 1

    def missing(self, expected: Iterable[str]) -> list[str]:
        return [each for each in expected if each not in self.seen]

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.seen.values() if count > 1)


class WorkerProcess:
    """``_worker_proc.py`` in a child process: consumes tasks (or answers RPCs) and appends
    ``start``/``done`` lines to a log file."""

    def __init__(self, url: str, options: dict[str, Any], log: Path, **settings: Any) -> None:
        config = {"url": url, "options": options, "log": str(log), **settings}
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ready(self, timeout: float = 20.0) -> None:
        """Wait for the child to say it consumes."""
        assert self.process.stdout is not None
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(
            loop.run_in_executor(None, self.process.stdout.readline), timeout
        )
        assert line.strip() == b"ready", f"worker {self.pid} did not start: {line!r}"

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()


class CompletionLog:
    """Reads the lines workers append: ``<event> <task id> <pid>``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def lines(self) -> list[tuple[str, str, int]]:
        entries = []
        for line in self.path.read_text().splitlines():
            event, ident, pid = line.split()
            entries.append((event, ident, int(pid)))
        return entries

    def done(self) -> Tally:
        tally = Tally()
        for event, ident, _ in self.lines():
            if event == "done":
                tally.add(ident)
        return tally

    def in_hand(self, pid: int) -> set[str]:
        """Tasks *pid* started and did not finish."""
        started = {ident for event, ident, who in self.lines() if who == pid and event == "start"}
        done = {ident for event, ident, who in self.lines() if who == pid and event == "done"}
        return started - done
