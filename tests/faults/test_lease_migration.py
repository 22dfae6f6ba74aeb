"""The migration recipe of ``docs/long-tasks.md``, step by step, on a private node: an old
kiwipy 0.9 task queue (7-day TTL, no dead-letter queue) is emptied into ``<queue>.dead`` with
``kiwipy dead park``, deleted, declared afresh by this library and refilled with
``kiwipy dead requeue``.
Nothing is changed in place and no task is lost; a sender waiting for a result gets it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from ._lease_support import Names, connect, messages, outcome, wait_for
from .broker import PrivateBroker

pytestmark = pytest.mark.slow


async def kiwipy_dead(broker: PrivateBroker, action: str, queue: str) -> str:
    """Run ``kiwipy dead ACTION --all`` on *queue*. :returns: its standard output."""
    argv = ["-m", "kiwipy", "dead", action, "--all", "--queue", queue, "--url", broker.url]
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_migrate_a_kiwipy09_queue(timeout_broker: PrivateBroker) -> None:
    names = Names()
    queue, dead = names.task_queue, f"{names.task_queue}.dead"
    old = await connect(timeout_broker, names, task_queue_compat=True)  # kiwipy 0.9's queue
    worker = None
    try:
        futures = [await old.task_send(n) for n in range(3)]
        # 1. With its workers stopped, move the old queue's tasks into <queue>.dead.
        assert (await kiwipy_dead(timeout_broker, "park", queue)).count("parked ") == 3
        assert await asyncio.to_thread(messages, timeout_broker, queue, dead) == {queue: 0, dead: 3}
        # 2. Delete the old queue (refused if a task arrived meanwhile: park again then).
        await asyncio.to_thread(timeout_broker.rabbitmqctl, "delete_queue", "--if-empty", queue)
        # 3. A worker of this library declares the queue afresh: no TTL, dead-lettering.
        worker = await connect(timeout_broker, names)
        done: list[int] = []
        await worker.add_task_subscriber(lambda _c, n: done.append(n) or n * 10)
        arguments = await asyncio.to_thread(
            timeout_broker.rabbitmqctl, "list_queues", "-q", "--formatter", "json", "name",
            "arguments",
        )  # fmt: skip
        fresh = next(q["arguments"] for q in json.loads(arguments) if q["name"] == queue)
        assert "x-message-ttl" not in str(fresh) and "x-dead-letter-routing-key" in str(fresh)
        # 4. Requeue the tasks from the dead-letter queue, in their order.
        assert (await kiwipy_dead(timeout_broker, "requeue", queue)).count("requeued ") == 3
        assert [await outcome(f, 10) for f in futures] == [0, 10, 20]
        await wait_for(lambda: len(done) == 3, 5, "every task ran")
        assert done == [0, 1, 2]
    finally:
        await old.disconnect()
        if worker is not None:
            await worker.disconnect()
