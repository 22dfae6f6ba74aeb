"""The ``sqlite://`` transport under faults, with real processes on one file in ``tmp_path``
(``_sqlite_proc.py``): workers and senders killed with SIGKILL at random moments, every
process stopped and restarted, a full disk, eight processes contending for the write lock,
and what an idle worker costs. Every scenario ends only the processes it started, by PID.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import kiwipy
from kiwipy.sqlite._broker import BrokerSettings

from .._ci import require
from .._waits import wait_until
from ._scenario import report


@pytest.fixture(autouse=True)
def _linux() -> None:
    """These scenarios read /proc (a skip elsewhere; a failure under ``CI=true``)."""
    require(sys.platform == "linux", "reads /proc; Linux only")


ROOT = Path(__file__).parents[2]
SRC = Path(kiwipy.__file__).parents[1]
OPTIONS = {"encoder": "json"}
#: How often every broker checks its peers' locks: the bound of redelivery after a crash.
LIVENESS = BrokerSettings("").liveness_interval
WAIT = 20.0


def _wait(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> float:
    """:returns: the seconds until *condition* held; fails after *timeout*."""
    return wait_until(condition, what, timeout)


class Proc:
    """``python -m tests.faults._sqlite_proc ROLE CONFIG`` in a child process; a thread
    collects the lines it prints (only whole lines: a line cut by a kill is no event)."""

    def __init__(self, role: str, config: dict[str, Any], stderr: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT)])}
        self.stderr_path = stderr
        with open(stderr, "ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.faults._sqlite_proc", role, json.dumps(config)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            if raw.endswith(b"\n"):
                self.lines.append(raw.decode().rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ready(self) -> bool:
        return bool(self.lines) and self.lines[0] == "ready"

    def wait_ready(self) -> None:
        _wait(lambda: self.ready or self.process.poll() is not None, f"process {self.pid}")
        assert self.ready, f"process {self.pid} did not start: {self.stderr()}"

    def words(self, first: str) -> list[str]:
        """The second word of every line starting with *first*."""
        return [line.split(" ", 2)[1] for line in list(self.lines) if line.startswith(first + " ")]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL this child, as a crash would (only if it still runs: the PID is ours)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.finish()

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for the child to end; :returns: its exit status."""
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        return code


class Procs:
    """Starts :class:`Proc` children on one file and kills every one still running at the
    end of the test."""

    def __init__(self, tmp: Path, db: Path) -> None:
        self.tmp = tmp
        self.url = f"sqlite:///{db}"
        self.log = tmp / "completions"
        self.log.touch()
        self.all: list[Proc] = []

    def start(self, role: str, **config: Any) -> Proc:
        options = {**OPTIONS, **config.pop("options", {})}
        config = {"url": self.url, "options": options, "log": str(self.log), **config}
        proc = Proc(role, config, self.tmp / f"stderr-{len(self.all)}")
        self.all.append(proc)
        return proc

    def worker(self, **config: Any) -> Proc:
        proc = self.start("worker", **config)
        proc.wait_ready()
        return proc

    def events(self, kind: str) -> list[tuple[str, int, float]]:
        """``(task id, pid, time)`` of every *kind* (``start``/``done``) line of the log."""
        found = []
        for line in self.log.read_text().splitlines():
            event, ident, pid, at = line.split()
            if event == kind:
                found.append((ident, int(pid), float(at)))
        return found

    def done(self) -> Counter[str]:
        return Counter(ident for ident, _, _ in self.events("done"))

    def kill_all(self) -> None:
        for proc in self.all:
            proc.kill()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    made = Procs(tmp_path, tmp_path / "kiwipy.db")
    try:
        yield made
    finally:
        made.kill_all()


def tasks_in_file(db: Path) -> list[str]:
    """The ids of the tasks in the file (ready or held by a process), read directly (a body
    is the JSON of ``[task, no_reply]``)."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        return [json.loads(body)[0]["id"] for (body,) in conn.execute("SELECT body FROM tasks")]
    finally:
        conn.close()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def dead_letters(db: Path) -> list[str]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return [reason for (reason,) in conn.execute("SELECT reason FROM dead_letters")]
    finally:
        conn.close()


def complaints(each: Iterable[Proc]) -> list[str]:
    """What the processes wrote to stderr: kiwipy's warnings and errors, tracebacks."""
    return [text for text in (p.stderr() for p in each) if text.strip()]


# 1. A worker killed in the middle of a task


def _kill_a_holder(procs: Procs, task: str) -> float:
    """One worker holds *task* and is killed once another is ready: :returns: the seconds
    from the kill to the other's start of the task."""
    holder = procs.worker(sleep=60)  # holds every task it takes
    sender = procs.start("send", prefix=task[:-2], count=1)
    assert sender.finish() == 0
    _wait(lambda: any(pid == holder.pid for _, pid, _ in procs.events("start")), "a start")
    other = procs.worker(sleep=0)
    killed_at = time.time()
    holder.kill()
    _wait(lambda: procs.done()[task] >= 1, "the task is redone")
    starts = [(pid, at) for ident, pid, at in procs.events("start") if ident == task]
    assert [pid for pid, _ in starts] == [holder.pid, other.pid]
    other.kill()
    return starts[1][1] - killed_at


@pytest.mark.slow
def test_a_killed_workers_task_goes_to_another_worker_within_a_second(procs: Procs) -> None:
    rounds = [_kill_a_holder(procs, f"k{n}-0") for n in range(3)]
    bound = LIVENESS * 4 + 1.0
    report(
        "sqlite-worker-sigkill",
        liveness_interval_s=LIVENESS,
        kill_to_redelivery_s=[round(each, 3) for each in rounds],
        bound_s=bound,
    )
    assert max(rounds) < bound


# 2. A sender killed in the middle of its sends


def _kill_a_sender(procs: Procs, db: Path, prefix: str, rng: random.Random) -> tuple[int, int]:
    """Kill a sender at a random moment of its loop: :returns: how many of its sends
    returned, and how many more are in the file (those that did not return)."""
    sender = procs.start("send", prefix=prefix, count=None)
    sender.wait_ready()
    _wait(lambda: len(sender.words("sent")) > 20, "sends")
    time.sleep(rng.uniform(0.0, 0.5))  # a random moment of the loop
    sender.kill()
    confirmed = set(sender.words("sent"))
    stored = {ident for ident in tasks_in_file(db) if ident.startswith(f"{prefix}-")}
    assert confirmed <= stored, sorted(confirmed - stored)[:10]
    return len(confirmed), len(stored - confirmed)


@pytest.mark.slow
def test_every_send_that_returned_before_a_kill_is_in_the_file(
    procs: Procs, tmp_path: Path
) -> None:
    rng = random.Random()
    figures = [_kill_a_sender(procs, tmp_path / "kiwipy.db", f"s{n}", rng) for n in range(4)]
    report(
        "sqlite-sender-sigkill",
        kills=len(figures),
        confirmed=[c for c, _ in figures],
        stored_unconfirmed=[u for _, u in figures],
        lost=0,
    )
    assert all(unconfirmed <= 1 for _, unconfirmed in figures)


# 3. Senders and workers killed at random, over and over


@pytest.mark.slow
def test_a_hundred_random_kills_lose_no_confirmed_task(procs: Procs, tmp_path: Path) -> None:
    rng = random.Random()
    senders: list[Proc] = []

    def sender(slot: int) -> Proc:
        # slot 0 awaits each reply before the next send; slot 1 sends without waiting
        prefix = f"g{len(senders)}"
        if slot == 0:
            senders.append(procs.start("send", prefix=prefix, count=10**6, each=True))
        else:
            senders.append(procs.start("send", prefix=prefix, count=None))
        return senders[-1]

    slots: list[Proc] = [sender(0), sender(1), procs.start("worker"), procs.start("worker")]
    began = time.monotonic()
    kills = killed_ready = 0
    while kills < 100:
        time.sleep(rng.uniform(0.05, 0.2))
        slot = rng.randrange(len(slots))
        victim = slots[slot]
        killed_ready += victim.ready
        victim.kill()
        kills += 1
        slots[slot] = sender(slot) if slot < 2 else procs.start("worker")
    chaos = time.monotonic() - began
    for each in slots[:2]:
        each.kill()
    confirmed = {ident for p in senders for ident in p.words("sent")}
    replies = sum(len(p.words("result")) for p in senders)
    drainer = procs.worker()
    db = tmp_path / "kiwipy.db"
    drained = _wait(lambda: not tasks_in_file(db), "the queue drains", timeout=60)
    done = procs.done()
    lost = confirmed - set(done)
    report(
        "sqlite-random-kills",
        kills=kills,
        killed_after_ready=killed_ready,
        chaos_s=round(chaos, 1),
        confirmed=len(confirmed),
        replies=replies,
        processed=len(done),
        duplicates=sum(done.values()) - len(done),
        lost=len(lost),
        dead_letters=len(dead_letters(db)),
        complaints=len(complaints(procs.all)),
        drain_s=round(drained, 2),
        integrity=integrity(db),
    )
    assert not lost, sorted(lost)[:10]
    assert integrity(db) == "ok"
    assert not dead_letters(db)
    assert not complaints(procs.all), complaints(procs.all)[0]
    drainer.kill()


# 4. Every process stopped, new ones started


@pytest.mark.slow
def test_tasks_outlive_every_process(procs: Procs) -> None:
    total = 300
    sender = procs.start("send", prefix="r", count=total)
    assert sender.finish() == 0  # closed: it disconnects and exits
    assert len(sender.words("sent")) == total
    holder = procs.worker(sleep=60, options={"task_prefetch_count": 5})
    _wait(lambda: len(procs.events("start")) == 5, "the first worker takes five")
    holder.kill()  # killed with five tasks in hand
    workers = [procs.start("worker"), procs.start("worker")]
    took = _wait(lambda: set(procs.done()) == {f"r-{n}" for n in range(total)}, "all processed")
    by = Counter(pid for _, pid, _ in procs.events("done"))
    report(
        "sqlite-restart-all",
        tasks=total,
        held_by_killed_worker=5,
        processed=len(procs.done()),
        per_new_worker=[by[w.pid] for w in workers],
        took_s=round(took, 2),
    )


# 5. A full disk


@pytest.mark.slow
def test_a_full_disk_fails_sends_clearly_and_keeps_what_was_stored(tmp_path: Path) -> None:
    """Tasks of 16 KiB fill a 2 MiB tmpfs: the send that does not fit raises StorageError,
    every send that returned is in the file. Then some space is freed, too little to
    acknowledge every task (the acks fill the disk again), then more: the same communicator
    takes and acknowledges them all."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
    )
    require(mounted.returncode == 0, f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    db = disk / "kiwipy.db"
    procs = Procs(tmp_path, db)
    try:
        fillers = [disk / "small", disk / "large"]  # room to free once the disk is full
        fillers[0].write_bytes(b"\0" * 256 * 1024)
        fillers[1].write_bytes(b"\0" * 768 * 1024)
        fill = procs.start("fill", size=16 * 1024)
        _wait(lambda: bool(fill.words("full")) or fill.process.poll() is not None, "a full disk")
        failure = next(line for line in fill.lines if line.startswith("full "))
        confirmed = set(fill.words("sent"))
        stored = set(tasks_in_file(db))
        assert failure.startswith("full StorageError: "), failure
        assert "disk is full" in failure and str(db) in failure, failure
        assert confirmed <= stored, sorted(confirmed - stored)[:10]
        fillers[0].unlink()
        assert fill.process.stdin is not None
        fill.process.stdin.write(b"go\n")
        fill.process.stdin.flush()
        _wait(lambda: set(procs.done()) >= confirmed, "the same communicator runs them all")
        left_when_full_again = len(tasks_in_file(db))
        assert left_when_full_again > 0  # acks failed: the disk was full again
        fillers[1].unlink()
        took = _wait(lambda: not tasks_in_file(db), "the acks are written")
        report(
            "sqlite-full-disk",
            disk="tmpfs 2 MiB",
            task_bytes=16 * 1024,
            confirmed=len(confirmed),
            stored=len(stored),
            error=failure[5:150],
            unacked_after_freeing_256KiB=left_when_full_again,
            acked_after_freeing_768KiB_s=round(took, 2),
            integrity=integrity(db),
        )
        assert integrity(db) == "ok"
    finally:
        procs.kill_all()
        subprocess.run(["umount", str(disk)], check=True)


# 6. Contention


@pytest.mark.slow
def test_eight_processes_contend_without_errors(procs: Procs) -> None:
    per_sender, senders_n = 200, 4
    workers = [procs.start("worker") for _ in range(4)]
    for each in workers:
        each.wait_ready()
    began = time.monotonic()
    senders = [
        procs.start("send", prefix=f"c{n}", count=per_sender, results=True)
        for n in range(senders_n)
    ]
    codes = [each.finish(timeout=60) for each in senders]
    took = time.monotonic() - began
    expected = {f"c{n}-{i}" for n in range(senders_n) for i in range(per_sender)}
    done = procs.done()
    errors = complaints(procs.all)
    report(
        "sqlite-contention",
        processes=len(procs.all),
        tasks=len(expected),
        results=sum(len(s.words("result")) for s in senders),
        processed=len(done),
        duplicates=sum(done.values()) - len(done),
        took_s=round(took, 2),
        tasks_per_s=round(len(expected) / took),
        errors=len(errors),
    )
    assert not errors, errors[0]
    assert codes == [0] * senders_n
    for n, each in enumerate(senders):
        results = {
            line.split()[1]: line.split()[2] for line in each.lines if line.startswith("result ")
        }
        assert results == {f"c{n}-{i}": f"c{n}-{i}" for i in range(per_sender)}
    assert set(done) == expected


# Idle cost


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_an_idle_worker_costs_almost_no_cpu(procs: Procs) -> None:
    workers = [procs.worker(), procs.worker()]  # two, so each also watches a peer
    window = 5.0
    before = [_cpu_seconds(w.pid) for w in workers]
    time.sleep(window)  # the measurement window itself
    used = [_cpu_seconds(w.pid) - b for w, b in zip(workers, before)]
    share = [u / window for u in used]
    report(
        "sqlite-idle-worker",
        window_s=window,
        cpu_s=[round(u, 3) for u in used],
        percent_of_a_core=[round(s * 100, 2) for s in share],
    )
    assert max(share) < 0.02
