"""The ``kiwipy`` command line end to end against the real RabbitMQ.

Every command runs as its own process (``python -m kiwipy ...``), as a user would run it;
the long-running ones are stopped with SIGINT or SIGTERM. Each test has exchange and queue
names of its own, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

pytestmark = pytest.mark.integration

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/"


def kiwipy(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiwipy", *argv], capture_output=True, text=True, timeout=timeout
    )


class Running:
    """A long-running ``kiwipy`` command, its output collected as it comes."""

    started: list[Running] = []

    def __init__(self, *argv: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kiwipy", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        Running.started.append(self)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.err + self.out):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise AssertionError(f"{text!r} not printed; stderr: {self.err}")
            time.sleep(0.02)

    def stop(self, signum: int = signal.SIGINT, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return code


@pytest.fixture(autouse=True)
def reap() -> Iterator[None]:
    """Kill what a failed test left running."""
    yield
    while Running.started:
        Running.started.pop().stop(signal.SIGKILL)


@pytest.fixture
def names(rmq_uri: str, unique_name: str) -> Iterator[list[str]]:
    """``--url`` and exchange/queue options unique to the test; the names are deleted after."""
    queue = f"{unique_name}.tasks"
    messages = f"{unique_name}.messages"
    yield ["--url", rmq_uri, "--message-exchange", messages, "--task-exchange", queue]
    asyncio.run(_delete(rmq_uri, [queue, f"{queue}.dead"], [messages, queue]))


async def _delete(url: str, queues: list[str], exchanges: list[str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)


def queue_of(names: list[str]) -> list[str]:
    return ["--queue", names[names.index("--task-exchange") + 1]]


@pytest.fixture
def handlers(tmp_path: Path) -> str:
    path = tmp_path / "handlers.py"
    path.write_text(
        textwrap.dedent(
            """
            def square(task):
                return task["x"] ** 2

            def divide(task):
                return task["x"] / task["y"]
            """
        )
    )
    return str(path)


def error_line(result: subprocess.CompletedProcess[str], command: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kiwipy {command}: error: ")
    return lines[0]


def test_worker_and_send(names: list[str], handlers: str) -> None:
    common = [*names, *queue_of(names), "--encoder", "json"]
    worker = Running("worker", f"{handlers}:square", "--prefetch", "2", *common)
    worker.wait_for("kiwipy worker: ready: ")
    assert "prefetch 2" in worker.err[0]
    for x, square in ((7, "49"), (3, "9")):
        result = kiwipy("send", "--wait", json.dumps({"x": x}), *common)
        assert (result.returncode, result.stdout) == (0, f"{square}\n"), result.stderr
    worker.wait_for("kiwipy worker: 2 tasks handled, ")  # the progress line
    assert worker.stop(signal.SIGINT) == 0
    assert worker.err[-1].startswith("kiwipy worker: stopped; 2 tasks handled, ")
    assert not any("Traceback" in line for line in worker.err)


def test_send_without_wait_then_inspect_then_work(names: list[str], handlers: str) -> None:
    common = [*names, *queue_of(names)]
    for x in (1, 2):
        result = kiwipy("send", json.dumps({"x": x}), *common)
        assert result.returncode == 0, result.stderr
        assert "task sent to queue" in result.stderr

    inspected = kiwipy("inspect", "--json", *common)
    assert inspected.returncode == 0, inspected.stderr
    report = json.loads(inspected.stdout)
    assert report["broker"]["product"] == "RabbitMQ"
    assert report["broker"]["version"]
    queue = queue_of(names)[1]
    by_name = {q["name"]: q for q in report["queues"]}
    counts = {key: by_name[queue][key] for key in ("name", "exists", "messages", "consumers")}
    assert counts == {"name": queue, "exists": True, "messages": 2, "consumers": 0}
    assert by_name[f"{queue}.dead"]["messages"] in (0, None)

    worker = Running("worker", f"{handlers}:square", "--max-messages", "2", *common)
    assert worker.process.wait(30) == 0
    worker.stop()
    assert "kiwipy worker: stopped; 2 tasks handled" in worker.err[-1]

    text = kiwipy("inspect", *common)
    assert text.returncode == 0
    assert text.stdout.startswith("broker: RabbitMQ ")
    assert any(line.split()[:2] == [queue, "0"] for line in text.stdout.splitlines())


def test_task_that_raises_and_wait_timeout(names: list[str], handlers: str) -> None:
    common = [*names, *queue_of(names)]
    timed_out = kiwipy("send", "--wait", "--timeout", "1", "1", *common)
    assert timed_out.returncode == 1
    assert "no result within 1 s" in error_line(timed_out, "send")

    worker = Running("worker", f"{handlers}:divide", *common)
    worker.wait_for("ready")
    failed = kiwipy("send", "--wait", '{"x": 1, "y": 0}', *common)
    assert worker.stop(signal.SIGTERM) == 0
    assert failed.returncode == 1
    line = error_line(failed, "send")
    assert line.endswith("the remote side raised ZeroDivisionError: division by zero")


def test_serve_and_rpc(names: list[str], handlers: str) -> None:
    server = Running("serve", "squarer", f"{handlers}:square", *names)
    server.wait_for("kiwipy serve: ready: ")
    result = kiwipy("rpc", "squarer", '{"x": 12}', *names)
    assert (result.returncode, result.stdout) == (0, "144\n"), result.stderr

    duplicate = kiwipy("serve", "squarer", f"{handlers}:square", *names)
    assert duplicate.returncode == 1
    assert "someone already answers RPCs as 'squarer'" in error_line(duplicate, "serve")

    unknown = kiwipy("rpc", "nobody-home", "1", *names)
    assert unknown.returncode == 1
    assert "nobody answers RPCs as 'nobody-home' (UnroutableError)" in error_line(unknown, "rpc")

    assert server.stop(signal.SIGTERM) == 0
    assert "kiwipy serve: stopped; 1 call handled" in server.err[-1]


def test_listen_and_broadcast(names: list[str]) -> None:
    listener = Running("listen", "--subject", "job.*.finished", "--json", *names)
    listener.wait_for("kiwipy listen: ready: listening for broadcasts with subject")
    for subject in ("job.1.finished", "job.2.failed", "job.3.finished"):
        sent = kiwipy("broadcast", '{"ok": true}', "--subject", subject, "--sender", "me", *names)
        assert sent.returncode == 0, sent.stderr
    cid = kiwipy("broadcast", "--subject", "job.4.finished", "--correlation-id", "c4", *names)
    assert cid.returncode == 0
    listener.wait_for('"job.4.finished"')
    assert listener.stop(signal.SIGINT) == 0
    records = [json.loads(line) for line in listener.out]
    assert records == [
        {"subject": "job.1.finished", "sender": "me", "correlation_id": None, "body": {"ok": True}},
        {"subject": "job.3.finished", "sender": "me", "correlation_id": None, "body": {"ok": True}},
        {"subject": "job.4.finished", "sender": None, "correlation_id": "c4", "body": None},
    ]
    assert "kiwipy listen: stopped; 3 broadcasts handled" in listener.err[-1]


def test_demo_on_rabbitmq(rmq_uri: str) -> None:
    result = kiwipy("demo", "--url", rmq_uri)
    assert result.returncode == 0, result.stderr
    assert "kiwipy demo on RabbitMQ at amqp://guest:***@" in result.stdout
    assert "rpc to 'nobody-home' raised UnroutableError" in result.stdout
    assert "14 checks passed" in result.stdout
    assert "Started three worker processes in " in result.stdout  # not threads of the demo
    assert "Ended the worker processes " in result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "1"],
        ["send", "--wait", "1"],
        ["rpc", "x", "1"],
        ["broadcast", "1"],
        ["worker", "json:dumps"],
        ["serve", "x", "json:dumps"],
        ["listen"],
        ["inspect"],
        ["demo"],
    ],
)
def test_unreachable_broker(argv: list[str]) -> None:
    result = kiwipy(*argv, "--url", UNREACHABLE, timeout=30)
    assert result.returncode == 1
    line = error_line(result, argv[0])
    assert "cannot connect to amqp://guest:***@127.0.0.1:1/" in line
    assert "Traceback" not in result.stderr
