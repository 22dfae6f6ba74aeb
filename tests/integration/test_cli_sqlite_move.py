"""``kiwipy move``: the tasks waiting in a SQLite file go to the real RabbitMQ, each deleted
from the file only once RabbitMQ confirmed it; a task that cannot be sent stays in the file.

The command runs as its own process (``python -m kiwipy move``); a RabbitMQ worker of this
library then runs the moved tasks. Every test has its own exchanges and queue, deleted after.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiormq
import pytest

from kiwipy import rmq, sqlite
from kiwipy.sqlite import SqliteAdmin

from .conftest import Names

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/"


def move(url: str, to: str, names: Names, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = ["move", "--from", url, "--to", to, "--task-exchange", names.task_exchange]
    argv += ["--message-exchange", names.message_exchange, *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "kiwipy", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def waiting(url: str, queue: str) -> int:
    with SqliteAdmin(url) as admin:
        (stats,) = admin.queues([queue])
        return stats.ready


async def _delete(uri: str, names: Names, queue: str) -> None:
    connection = await aiormq.connect(uri)
    try:
        channel = await connection.channel()
        for name in (queue, f"{queue}.dead"):
            await channel.queue_delete(name)
        for name in (names.task_exchange, names.message_exchange):
            await channel.exchange_delete(name)
    finally:
        await connection.close()


@pytest.fixture
def queue(rmq_uri: str, names: Names) -> Iterator[str]:
    name = f"{names.prefix}.moved"
    yield name
    asyncio.run(_delete(rmq_uri, names, name))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/tasks.db"


def test_move_sends_every_waiting_task_to_rabbitmq(
    rmq_uri: str, names: Names, queue: str, url: str
) -> None:
    count = 7
    comm = sqlite.connect(url)
    with comm:
        sender = comm.task_queue(queue)
        for i in range(count - 1):
            sender.task_send({"n": i}, no_reply=True)
        sender.task_send({"n": count - 1})  # its sender waits for a result it will not get
    assert waiting(url, queue) == count

    done = move(url, rmq_uri, names)
    assert done.returncode == 0, done.stderr
    assert f"moved {count} task(s)" in done.stderr
    assert "cannot reach senders" in done.stderr and "(1 had a sender waiting)" in done.stderr
    assert len(done.stdout.splitlines()) == count
    assert "Traceback" not in done.stderr
    assert waiting(url, queue) == 0  # the file is empty

    got: list[Any] = []
    all_done = threading.Event()

    def work(_comm: Any, task: Any) -> Any:
        got.append(task)
        if len(got) == count:
            all_done.set()
        return task

    worker = rmq.RmqThreadCommunicator.connect(
        rmq_uri, message_exchange=names.message_exchange, task_exchange=names.task_exchange
    )
    try:
        worker.task_queue(queue).add_task_subscriber(work)
        assert all_done.wait(WAIT), f"the worker got {got}"
    finally:
        worker.close()
    assert sorted(task["n"] for task in got) == list(range(count))


def test_tasks_not_sent_stay_in_the_file(rmq_uri: str, names: Names, queue: str, url: str) -> None:
    comm = sqlite.connect(url)
    with comm:
        for i in range(4):
            comm.task_queue(queue).task_send({"n": i}, no_reply=True)
    # an encoder the command does not know: this task cannot be decoded, so it stays
    custom = sqlite.connect(url, encoder=lambda obj: json.dumps(obj).encode(), decoder=json.loads)
    with custom:
        custom.task_queue(queue).task_send({"n": "custom"}, no_reply=True)
    assert waiting(url, queue) == 5

    # RabbitMQ unreachable: nothing moves
    failed = move(url, UNREACHABLE, names)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr and failed.stderr.count("\n") == 1, failed.stderr
    assert waiting(url, queue) == 5

    # stop after two: the others stay, oldest first moved
    two = move(url, rmq_uri, names, "--queue", queue, "--count", "2")
    assert two.returncode == 0, two.stderr
    assert "moved 2 task(s)" in two.stderr and "3 still wait there" in two.stderr
    assert waiting(url, queue) == 3

    rest = move(url, rmq_uri, names, "--queue", queue)
    assert rest.returncode == 1  # the custom-encoded task could not be sent
    assert "moved 2 task(s)" in rest.stderr and "1 still wait there" in rest.stderr
    assert "cannot decode" in rest.stderr
    with SqliteAdmin(url) as admin:
        (left,) = admin.ready_tasks(queue, 10)
        assert left.encoder not in ("yaml", "json", "msgpack", "yaml-safe")

    got: list[Any] = []
    four = threading.Event()

    def work(_comm: Any, task: Any) -> None:
        got.append(task)
        if len(got) == 4:
            four.set()

    worker = rmq.RmqThreadCommunicator.connect(
        rmq_uri, message_exchange=names.message_exchange, task_exchange=names.task_exchange
    )
    try:
        worker.task_queue(queue).add_task_subscriber(work)
        assert four.wait(WAIT), f"the worker got {got}"
    finally:
        worker.close()
    assert [task["n"] for task in got] == [0, 1, 2, 3]
