"""``kiwipy worker`` and ``serve`` in production against the real RabbitMQ: draining on
SIGTERM, concurrency and prefetch, failed and parked tasks, bounded ``-v`` output.

Every command runs as its own process and is signalled by PID. A task that must still be
running when a signal comes waits for a *gate* file the test creates (bounded by the
handler's own deadline), so no test depends on how long anything takes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap
import time
from pathlib import Path

import aio_pika
import pytest

import kiwipy
from kiwipy import exceptions

from .test_cli_rmq import Running, names, queue_of, reap
from .test_cli_rmq import kiwipy as run_kiwipy

__all__ = ("names", "reap")  # fixtures shared with test_cli_rmq


@pytest.fixture
def gated(tmp_path: Path) -> str:
    """A module of handlers; ``gated`` runs until its task's gate file exists."""
    path = tmp_path / "gated_handlers.py"
    path.write_text(
        textwrap.dedent(
            """
            import os, sys, time

            def gated(task):
                print(f"started {task['n']}", file=sys.stderr, flush=True)
                deadline = time.monotonic() + 60
                while not os.path.exists(task["gate"]):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the gate never opened")
                    time.sleep(0.02)
                return task["n"] * 10

            def divide(task):
                return task["x"] / task["y"]

            def size(task):
                return len(task)
            """
        )
    )
    return str(path)


def exited(command: Running, timeout: float = 30) -> int:
    """:returns: the exit code of *command*, which must end by itself within *timeout*."""
    command.process.wait(timeout)
    return command.stop()


def task(n: int, gate: Path) -> str:
    return json.dumps({"n": n, "gate": str(gate)})


def started(worker: Running) -> int:
    return sum(line.startswith("started ") for line in worker.err)


def wait_started(worker: Running, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while started(worker) < count:
        assert time.monotonic() < deadline, f"{count} tasks not started: {worker.err}"
        assert worker.process.poll() is None, worker.err
        time.sleep(0.02)


def ready_in(names: list[str]) -> int:
    result = run_kiwipy("inspect", "--json", *names, *queue_of(names))
    assert result.returncode == 0, result.stderr
    queue = queue_of(names)[1]
    return int(
        next(q for q in json.loads(result.stdout)["queues"] if q["name"] == queue)["messages"]
    )


def wait_ready_count(names: list[str], count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (ready := ready_in(names)) != count:
        assert time.monotonic() < deadline, f"{ready} tasks ready, not {count}"
        time.sleep(0.1)


# Item 7: drain on SIGTERM


def test_sigterm_lets_a_running_task_finish_and_reply(
    names: list[str], gated: str, tmp_path: Path
) -> None:
    common = [*names, *queue_of(names)]
    worker = Running("worker", f"{gated}:gated", "--grace", "30", *common)
    worker.wait_for("kiwipy worker: ready: ")
    gate = tmp_path / "gate"
    sender = Running("send", task(4, gate), "--wait", "--timeout", "30", *common)
    wait_started(worker, 1)
    worker.process.send_signal(signal.SIGTERM)
    worker.wait_for("kiwipy worker: stopping: no new tasks; waiting up to 30 s for 1 running task")
    gate.touch()
    assert exited(worker, 30) == 0
    assert exited(sender, 30) == 0, sender.err
    assert sender.out == ["40"]
    assert "kiwipy worker: stopped; 1 task handled" in worker.err[-1]
    assert "unfinished" not in worker.err[-1]


def test_task_still_running_after_the_grace_goes_to_another_worker(
    names: list[str], gated: str, tmp_path: Path
) -> None:
    common = [*names, *queue_of(names)]
    first = Running("worker", f"{gated}:gated", "--grace", "0.5", *common)
    first.wait_for("kiwipy worker: ready: ")
    gate = tmp_path / "gate"
    sender = Running("send", task(5, gate), "--wait", "--timeout", "60", *common)
    wait_started(first, 1)
    first.process.send_signal(signal.SIGTERM)
    assert exited(first, 30) == 0
    assert first.err[-1].endswith(
        "1 unfinished, handed back to the queue (after the grace period)"
    ), first.err
    second = Running("worker", f"{gated}:gated", *common)
    wait_started(second, 1)
    gate.touch()
    assert exited(sender, 30) == 0, sender.err
    assert sender.out == ["50"]
    assert second.stop(signal.SIGTERM) == 0
    assert "kiwipy worker: stopped; 1 task handled" in second.err[-1]


def test_a_second_signal_stops_at_once(names: list[str], gated: str, tmp_path: Path) -> None:
    common = [*names, *queue_of(names)]
    worker = Running("worker", f"{gated}:gated", "--grace", "600", *common)
    worker.wait_for("kiwipy worker: ready: ")
    assert run_kiwipy("send", task(6, tmp_path / "never"), *common).returncode == 0
    wait_started(worker, 1)
    worker.process.send_signal(signal.SIGINT)
    worker.wait_for("waiting up to 600 s for 1 running task")
    worker.process.send_signal(signal.SIGINT)
    assert exited(worker, 15) == 0  # far less than the grace
    assert worker.err[-1].endswith("1 unfinished, handed back to the queue (at once)")
    wait_ready_count(names, 1)  # the task is back, for another worker


def test_serve_drains_too(names: list[str], gated: str, tmp_path: Path) -> None:
    server = Running("serve", "slowpoke", f"{gated}:gated", "--grace", "30", *names)
    server.wait_for("kiwipy serve: ready: ")
    gate = tmp_path / "gate"
    caller = Running("rpc", "slowpoke", task(7, gate), "--timeout", "30", *names)
    wait_started(server, 1)
    server.process.send_signal(signal.SIGTERM)
    server.wait_for("kiwipy serve: stopping: no new calls; waiting up to 30 s for 1 running call")
    gate.touch()
    assert exited(server, 30) == 0
    assert exited(caller, 30) == 0, caller.err
    assert caller.out == ["70"]


# Item 8: concurrency and prefetch


def test_concurrency_bounds_what_each_worker_takes(
    names: list[str], gated: str, tmp_path: Path
) -> None:
    common = [*names, *queue_of(names)]
    gate = tmp_path / "gate"
    for n in range(6):
        assert run_kiwipy("send", task(n, gate), *common).returncode == 0
    first = Running("worker", f"{gated}:gated", "--concurrency", "2", *common)
    first.wait_for("concurrency 2, prefetch 2, grace 30 s")
    wait_started(first, 2)
    wait_ready_count(names, 4)  # prefetch 2: the broker keeps the rest of the backlog
    second = Running("worker", f"{gated}:gated", "--concurrency", "2", *common)
    wait_started(second, 2)
    wait_ready_count(names, 2)
    assert started(first) == 2  # never more than 2 at once, nor in hand
    gate.touch()
    wait_ready_count(names, 0)
    for worker in (first, second):
        assert worker.stop(signal.SIGTERM) == 0
    handled = [int(w.err[-1].split("stopped; ")[1].split()[0]) for w in (first, second)]
    assert sum(handled) == 6 and min(handled) >= 2, (first.err, second.err)


# Item 9: failed and parked tasks


def test_failed_task_traceback_is_logged_and_sent(
    names: list[str], gated: str, rmq_uri: str
) -> None:
    common = [*names, *queue_of(names)]
    worker = Running("worker", f"{gated}:divide", *common)
    worker.wait_for("kiwipy worker: ready: ")
    options = {
        "message_exchange": names[names.index("--message-exchange") + 1],
        "task_exchange": names[names.index("--task-exchange") + 1],
        "task_queue": queue_of(names)[1],
    }
    with kiwipy.connect(rmq_uri, **options) as sender:
        future = sender.task_send({"x": 1, "y": 0})
        with pytest.raises(exceptions.RemoteException) as raised:
            while True:  # kiwipy 0.9's nested futures
                future = future.result(timeout=30)
    remote = raised.value.remote_traceback or ""
    assert "in divide" in remote and "ZeroDivisionError: division by zero" in remote
    worker.wait_for("ZeroDivisionError: division by zero")
    text = "\n".join(worker.err)
    assert 'task {"x": 1, "y": 0} raised ZeroDivisionError: division by zero' in text
    assert "Traceback (most recent call last):" in text
    assert 'return task["x"] / task["y"]' in text
    assert "cli/_serve.py" not in text  # the traceback starts at the user's code
    assert "warning: task raised" not in text  # the library's record of it is not repeated
    assert worker.stop(signal.SIGTERM) == 0


def test_parked_task_is_logged_and_counted(names: list[str], gated: str, rmq_uri: str) -> None:
    common = [*names, *queue_of(names)]
    worker = Running("worker", f"{gated}:size", *common)
    worker.wait_for("kiwipy worker: ready: ")
    asyncio.run(_publish_raw(rmq_uri, queue_of(names)[1], b"\x81\xa1a\xff not yaml"))
    assert run_kiwipy("send", '"abc"', *common).returncode == 0
    worker.wait_for("kiwipy worker: error: parking a task of ")
    worker.wait_for("1 task handled, 1 parked as undecodable")
    assert worker.stop(signal.SIGTERM) == 0
    assert "stopped; 1 task handled, 1 parked as undecodable" in worker.err[-1]


async def _publish_raw(url: str, queue: str, body: bytes) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)


# Item 10: -v shows a bounded preview


def test_verbose_shows_a_bounded_preview(names: list[str], gated: str, tmp_path: Path) -> None:
    common = [*names, *queue_of(names)]
    body = tmp_path / "big.json"
    body.write_text(json.dumps("x" * 1_000_000))
    worker = Running("worker", f"{gated}:size", "-v", "--max-messages", "1", *common)
    worker.wait_for("kiwipy worker: ready: ")
    assert run_kiwipy("send", "--file", str(body), *common).returncode == 0
    assert exited(worker, 30) == 0  # --max-messages 1
    line = next(line for line in worker.err if line.startswith("task "))
    assert line.endswith("... (1,000,002 characters) -> 1000000")
    assert len(line) < 300
