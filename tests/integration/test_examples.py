"""The runnable examples in ``examples/``, each pair run as a user would, against RabbitMQ.

``KIWIPY_URL`` points them at the test broker and ``KIWIPY_EXAMPLE_PREFIX`` gives each test
exchange and queue names of its own (deleted afterwards); the long-running halves exit by
themselves with ``--count``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def env(rmq_uri: str, unique_name: str) -> Iterator[dict[str, str]]:
    yield {**os.environ, "KIWIPY_URL": rmq_uri, "KIWIPY_EXAMPLE_PREFIX": unique_name}
    asyncio.run(_delete(rmq_uri, unique_name))


async def _delete(url: str, prefix: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in (f"{prefix}.tasks", f"{prefix}.tasks.dead"):
            await channel.queue_delete(queue)
        for exchange in (f"{prefix}.messages", f"{prefix}.tasks"):
            await channel.exchange_delete(exchange)


async def _wait_queued(url: str, queue: str, timeout: float = 30.0) -> None:
    """Wait until *queue* exists and holds a message (a new interpreter imports kiwipy first:
    seconds on a busy machine)."""
    connection = await aio_pika.connect(url)
    async with connection:
        deadline = time.monotonic() + timeout
        while True:
            channel = await connection.channel()  # a passive declare of no queue closes it
            try:
                queued = await channel.declare_queue(queue, passive=True)
                if queued.declaration_result.message_count:
                    return
            except aio_pika.exceptions.ChannelClosed:
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()
            assert time.monotonic() < deadline, f"nothing was queued in {queue}"
            await asyncio.sleep(0.05)


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def reap() -> Iterator[None]:
    """Kill what a failed test left running."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def start(env: dict[str, str], script: str, *argv: str) -> subprocess.Popen[str]:
    """Start a long-running example and wait for its first line (it is subscribed then)."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    _STARTED.append(process)
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith(" [*]") or first.startswith(" [x] Awaiting"), first
    return process


def run(env: dict[str, str], script: str, *argv: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def finish(process: subprocess.Popen[str]) -> list[str]:
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return out.splitlines()


def test_rpc_client_and_server(env: dict[str, str]) -> None:
    server = start(env, "rpc_server.py", "--count", "2")
    assert run(env, "rpc_client.py", "10") == [" [x] Requesting fib(10)", " [.] Got 55"]
    assert run(env, "rpc_client.py") == [" [x] Requesting fib(30)", " [.] Got 832040"]
    assert finish(server) == [" [.] fib(10)", " [.] fib(30)"]


def test_rpc_client_without_server(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "rpc_client.py"), "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Nobody answers 'fib': start examples/rpc_server.py first" in result.stderr


def test_new_task_and_worker(env: dict[str, str]) -> None:
    worker = start(env, "worker.py", "--count", "2")
    assert run(env, "new_task.py", "Hello", "World.") == [
        " [x] Sending 'Hello World.'",
        " [x] Result 'Hello World.'",
    ]
    assert run(env, "new_task.py") == [" [x] Sending 'Hello World!'", " [x] Result 'Hello World!'"]
    assert finish(worker) == [
        " [x] Received 'Hello World.'",
        " [x] Done",
        " [x] Received 'Hello World!'",
        " [x] Done",
    ]


def test_tasks_wait_for_a_worker(env: dict[str, str], rmq_uri: str, unique_name: str) -> None:
    """A task sent before any worker runs waits in the queue for one."""
    sender = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "new_task.py"), "queued"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    _STARTED.append(sender)
    asyncio.run(_wait_queued(rmq_uri, f"{unique_name}.tasks"))
    worker = start(env, "worker.py", "--count", "1")
    assert finish(sender) == [" [x] Sending 'queued'", " [x] Result 'queued'"]
    assert finish(worker) == [" [x] Received 'queued'", " [x] Done"]


def test_emit_and_receive_logs_with_topic_filters(env: dict[str, str]) -> None:
    receiver = start(env, "receive_logs_topic.py", "--count", "2", "kern.*", "*.critical")
    for subject, message in (
        ("kern.info", "kernel says hi"),
        ("user.info", "not for this listener"),
        ("app.critical", "disk full"),
    ):
        assert run(env, "emit_log_topic.py", subject, message) == [
            f" [x] Sent {subject!r}:{message!r}"
        ]
    assert finish(receiver) == [
        " [x] 'kern.info':'kernel says hi'",
        " [x] 'app.critical':'disk full'",
    ]


def test_trace_task_over_rabbitmq(env: dict[str, str], unique_name: str) -> None:
    lines = run(env, "trace_task.py")
    # the SDK's console exporter prints spans from the worker's threads meanwhile
    assert any("result: 45" in line for line in lines)
    assert lines[-5:] == [
        "trace:",
        "  notebook cell [-]",
        f"    send {unique_name}.tasks [PRODUCER]",
        f"      process {unique_name}.tasks [CONSUMER]",
        "        simulate [-]",
    ]
    assert '        "messaging.system": "rabbitmq",' in lines
