"""Issue 5: no silent expiry, no endless redelivery. Tasks that expire or cannot be processed
end in ``<queue>.dead`` with their reason, and ``kiwipy dead`` lists and requeues them.

The command line runs as its own process (``python -m kiwipy dead ...``), as an operator
would run it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any, Optional

import aiormq
import pytest
from pamqp import commands as spec

import kiwipy
from kiwipy import rmq

from .conftest import Names

WAIT = 10.0


def kiwipy_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiwipy", *argv], capture_output=True, text=True, timeout=60
    )


async def dead(uri: str, queue: str, *argv: str) -> subprocess.CompletedProcess[str]:
    done = await asyncio.to_thread(kiwipy_cli, "dead", *argv, "--queue", queue, "--url", uri)
    assert "Traceback" not in done.stderr, done.stderr
    return done


async def listed(uri: str, queue: str) -> list[dict[str, Any]]:
    done = await dead(uri, queue, "list", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["queue"] == f"{queue}.dead"
    rows: list[dict[str, Any]] = report["messages"]
    return rows


async def outcome(future: Optional[asyncio.Future[Any]]) -> Any:
    assert future is not None
    return await asyncio.wait_for(future, WAIT)


async def count(channel: aiormq.abc.AbstractChannel, queue: str) -> int:
    ok = await channel.queue_declare(queue, passive=True)
    return int(ok.message_count or 0)


async def wait_count(channel: aiormq.abc.AbstractChannel, queue: str, expected: int) -> None:
    for _ in range(int(WAIT / 0.05)):
        if await count(channel, queue) == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{queue} never held {expected} messages")


async def test_expired_task_is_dead_lettered_and_requeued(
    rmq_uri: str, names: Names, raw_channel: aiormq.abc.AbstractChannel
) -> None:
    sender = await rmq.async_connect(rmq_uri, **names.options(task_message_ttl=200))
    worker = await rmq.async_connect(rmq_uri, **names.options())
    try:
        future = await sender.task_send({"job": "late"})
        await wait_count(raw_channel, f"{names.task_queue}.dead", 1)  # nobody took it in time
        rows = await listed(rmq_uri, names.task_queue)
        assert [row["reason"] for row in rows] == ["expired"]
        assert rows[0]["detail"] == f"from {names.task_queue}"
        assert rows[0]["body"] == '{"job": "late"}'
        assert rows[0]["correlation_id"] and rows[0]["age_seconds"] is not None
        assert await listed(rmq_uri, names.task_queue) == [
            {**rows[0], "age_seconds": pytest.approx(rows[0]["age_seconds"], abs=30)}
        ]  # listing took nothing away

        await worker.add_task_subscriber(lambda _c, task: f"done: {task['job']}")
        done = await dead(rmq_uri, names.task_queue, "requeue", "--all")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            f"requeued {rows[0]['correlation_id']} (expired) to {names.task_queue}"
        )
        assert "requeued 1 of 1" in done.stderr
        # Same correlation id and reply queue: the result reaches the waiting sender.
        assert await outcome(future) == "done: late"
        assert await count(raw_channel, f"{names.task_queue}.dead") == 0
    finally:
        await worker.disconnect()
        await sender.disconnect()


async def test_poison_task_is_parked_and_requeued_to_a_fixed_worker(
    rmq_uri: str, names: Names, raw_channel: aiormq.abc.AbstractChannel
) -> None:
    """A worker that cannot decode a task (here: the wrong encoder) parks it with its reason
    instead of redelivering it forever; once a worker that can is running, it is requeued."""
    sender = await rmq.async_connect(rmq_uri, **names.options())
    broken = await rmq.async_connect(rmq_uri, **names.options(encoder="json"))
    try:
        await broken.add_task_subscriber(lambda _c, task: "never")
        future = await sender.task_send(("a", "tuple"))  # YAML !!python/tuple: not JSON
        with pytest.raises(kiwipy.RemoteException):
            await outcome(future)  # the sender is told at once
        rows = await listed(rmq_uri, names.task_queue)
        assert [row["reason"] for row in rows] == ["undecodable"]
        assert rows[0]["detail"]  # the decoder's error
        await broken.disconnect()

        fixed = await rmq.async_connect(rmq_uri, **names.options())
        seen: list[Any] = []
        await fixed.add_task_subscriber(lambda _c, task: seen.append(task))
        done = await dead(
            rmq_uri, names.task_queue, "requeue", "--correlation-id", rows[0]["correlation_id"]
        )
        assert done.returncode == 0, done.stderr
        assert "(undecodable)" in done.stdout
        for _ in range(int(WAIT / 0.05)):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert seen == [("a", "tuple")]
        await fixed.disconnect()
    finally:
        await broken.disconnect()
        await sender.disconnect()


async def test_quorum_delivery_limit_dead_letters(
    rmq_uri: str, names: Names, raw_channel: aiormq.abc.AbstractChannel
) -> None:
    """A quorum queue delivers a task ``x-delivery-limit + 1`` times, then dead-letters it
    with reason ``delivery_limit``: rejections count (a task nobody wants does not loop)."""
    options = names.options(task_queue_type="quorum", task_delivery_limit=1, reject_backoff=0.05)
    worker = await rmq.async_connect(rmq_uri, **options)
    try:
        deliveries: list[Any] = []

        def reject(_c: Any, task: Any) -> None:
            deliveries.append(task)
            raise kiwipy.TaskRejected("not here")

        identifier = await worker.add_task_subscriber(reject)
        future = await worker.task_send("unwanted")
        await wait_count(raw_channel, f"{names.task_queue}.dead", 1)
        assert deliveries == ["unwanted", "unwanted"]  # limit 1: two deliveries
        rows = await listed(rmq_uri, names.task_queue)
        assert [row["reason"] for row in rows] == ["delivery_limit"]

        await worker.remove_task_subscriber(identifier)
        await worker.add_task_subscriber(lambda _c, task: f"took {task}")
        done = await dead(rmq_uri, names.task_queue, "requeue", "--count", "1")
        assert done.returncode == 0, done.stderr
        assert await outcome(future) == "took unwanted"
    finally:
        await worker.disconnect()


async def test_list_keeps_order_and_requeue_count_takes_the_oldest(
    rmq_uri: str, names: Names, raw_channel: aiormq.abc.AbstractChannel
) -> None:
    communicator = await rmq.async_connect(rmq_uri, **names.options())
    try:
        await communicator.get_default_task_queue()  # declares the queue and its .dead
        for n in range(3):
            props = spec.Basic.Properties(
                correlation_id=f"c{n}", headers={"x-kiwipy-reason": "malformed"}
            )
            await raw_channel.basic_publish(
                b"- %d\n- false\n" % n, routing_key=f"{names.task_queue}.dead", properties=props
            )
        await wait_count(raw_channel, f"{names.task_queue}.dead", 3)
        for _ in range(2):
            assert [row["correlation_id"] for row in await listed(rmq_uri, names.task_queue)] == [
                "c0",
                "c1",
                "c2",
            ]
        done = await dead(rmq_uri, names.task_queue + ".dead", "requeue", "--count", "1")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("requeued c0 (malformed)")
        rows = await listed(rmq_uri, names.task_queue)
        assert [row["correlation_id"] for row in rows] == ["c1", "c2"]
        assert await count(raw_channel, names.task_queue) == 1
        message = await raw_channel.basic_get(names.task_queue, no_ack=True)
        assert message.header.properties.headers == {"x-kiwipy-requeued": 1}

        text = await dead(rmq_uri, names.task_queue, "list")
        assert text.returncode == 0
        assert text.stdout.startswith(f"{names.task_queue}.dead: 2 dead-lettered task(s)\n")
        assert text.stderr == ""
        assert "malformed" in text.stdout and "c1" in text.stdout
    finally:
        await communicator.disconnect()


async def test_clear_errors(rmq_uri: str, names: Names) -> None:
    missing = await dead(rmq_uri, names.task_queue, "list")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"kiwipy dead: error: queue '{names.task_queue}.dead' does not exist "
        f"(is '{names.task_queue}' a task queue?)"
    )
    unreachable = await dead("amqp://guest:guest@127.0.0.1:1/", names.task_queue, "list")
    assert unreachable.returncode == 1 and "cannot connect" in unreachable.stderr
    none = await dead(rmq_uri, names.task_queue, "requeue", "--count", "0")
    assert none.returncode == 2
    assert "argument --count: 0 is not a whole number, 1 or more" in none.stderr
