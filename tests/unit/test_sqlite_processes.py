"""The SQLite transport between real processes: RPC identities, lost replies when a process
dies, broadcasts, and tasks, each with a child process on the same file."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import kiwipy
from kiwipy.sqlite import SqliteAdmin
from kiwipy.sqlite._broker import BrokerSettings

ROOT = pathlib.Path(__file__).resolve().parents[2]

#: How long a dead process may take to be noticed: a few liveness checks, plus scheduling.
NOTICED = BrokerSettings("").liveness_interval * 4 + 2.0

_CHILD = """
import sys, threading, time, kiwipy
url, mode = sys.argv[1], sys.argv[2]
comm = kiwipy.connect(url, encoder="msgpack")
hang = threading.Event()
def handling(c, msg):
    print("HANDLING", flush=True)
    hang.wait()
if mode == "hang":
    comm.add_rpc_subscriber(handling, "hanging")
elif mode == "echo":
    comm.add_rpc_subscriber(lambda c, msg: msg, "echo")
    comm.add_task_subscriber(lambda c, task: task * 2)
    comm.add_broadcast_subscriber(
        lambda c, body, sender, subject, cid: print("BROADCAST", body, flush=True)
    )
print("READY", flush=True)
hang.wait()
"""


@pytest.fixture
def url(tmp_path: pathlib.Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"


class Child:
    def __init__(self, url: str, mode: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, url, mode],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout
        line = self.stdout.readline().strip()
        assert line == "READY", line

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def end(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.stdout.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        child.end()


def _child(children: list[Child], url: str, mode: str) -> Child:
    child = Child(url, mode)
    children.append(child)
    return child


@pytest.mark.parametrize("size", [16, 200_000], ids=["datagram", "through-the-file"])
def test_an_rpc_to_a_killed_process_ends_with_reply_lost(
    url: str, children: list[Child], size: int
) -> None:
    child = _child(children, url, "hang")
    with kiwipy.connect(url, encoder="msgpack") as comm:
        future = comm.rpc_send("hanging", b"x" * size)
        assert child.stdout.readline().strip() == "HANDLING"
        assert not future.done()
        killed = time.monotonic()
        child.kill()
        with pytest.raises(kiwipy.ReplyLost):
            future.result(timeout=NOTICED)
        assert time.monotonic() - killed < NOTICED
        with pytest.raises(kiwipy.UnroutableError):
            comm.rpc_send("hanging", b"again")


def test_rpc_identifiers_are_unique_across_processes(url: str, children: list[Child]) -> None:
    _child(children, url, "echo")
    with kiwipy.connect(url, encoder="msgpack") as comm:
        with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
            comm.add_rpc_subscriber(lambda c, msg: msg, "echo")
        assert comm.rpc_send("echo", b"hi").result(timeout=5) == b"hi"
        big = b"y" * 300_000  # through the file both ways
        assert comm.rpc_send("echo", big).result(timeout=5) == big


def test_an_identifier_of_a_killed_process_can_be_taken(url: str, children: list[Child]) -> None:
    child = _child(children, url, "echo")
    child.kill()
    with kiwipy.connect(url, encoder="msgpack") as comm:
        comm.add_rpc_subscriber(lambda c, msg: b"mine", "echo")
        assert comm.rpc_send("echo", b"hi").result(timeout=5) == b"mine"


def test_tasks_and_broadcasts_reach_another_process(url: str, children: list[Child]) -> None:
    child = _child(children, url, "echo")
    with kiwipy.connect(url, encoder="msgpack") as comm:
        futures = [comm.task_send(n) for n in range(20)]
        assert [f.result(timeout=5) for f in futures] == [n * 2 for n in range(20)]
        comm.broadcast_send("hello", subject="greeting")
        assert child.stdout.readline().strip() == "BROADCAST hello"


def test_a_task_past_its_ttl_is_dead_lettered_not_started(url: str) -> None:
    """``task_message_ttl``: a task that waited longer in its queue is parked ``expired``;
    one sent after the worker came is processed."""
    ttl_ms = 100
    started: list[int] = []
    with kiwipy.connect(url, encoder="msgpack", task_message_ttl=ttl_ms) as sender:
        sender.task_send(1, no_reply=True)
        sent = time.monotonic()
        while time.monotonic() - sent < ttl_ms / 1000:  # the scenario: the task outlives it
            time.sleep(ttl_ms / 1000 / 4)
        with kiwipy.connect(url, encoder="msgpack") as worker:
            worker.add_task_subscriber(lambda _c, task: started.append(task) or task)
            assert sender.task_send(2).result(timeout=5) == 2
        with SqliteAdmin(url) as admin:
            letters = admin.dead_letters()
    assert started == [2]
    assert [letter.reason for letter in letters] == ["expired"]


def test_a_bad_ttl_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="task_message_ttl"):
        kiwipy.connect(url, task_message_ttl=0)
