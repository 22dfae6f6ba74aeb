"""docs/deployment.md's health check and ``kiwipy inspect`` exit codes, run as written against
the shared broker (issue 19, item 12). The page's account recipe (``rabbitmqctl``) runs on a
private node in ``tests/faults/test_docs_deployment_account.py``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiwipy import rmq

from .conftest import Names

PAGE = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/"


def named_block(name: str) -> str:
    """:returns: the body of the page's code block named *name*."""
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(rf"```{{code-block}} \w+\n:name: {name}\n\n(.*?)```", text, re.S)
    assert match is not None, f"docs/deployment.md has no block named {name}"
    return match.group(1)


def run_health_check(url: str, queue: str) -> subprocess.CompletedProcess[str]:
    script = named_block("health-check").replace("myapp.tasks", queue)
    env = {**os.environ, "KIWIPY_URL": url}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def worker(rmq_uri: str, names: Names) -> Iterator[rmq.RmqThreadCommunicator]:
    """A communicator consuming the test's task queue, as a worker would."""
    comm = rmq.RmqThreadCommunicator.connect(rmq_uri, **names.options())
    comm.add_task_subscriber(lambda _comm, task: task)
    yield comm
    comm.close()


def test_health_check_with_a_worker(rmq_uri: str, names: Names, worker: object) -> None:
    run = run_health_check(rmq_uri, names.task_queue)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "0 waiting, 1 consuming\n"


def test_health_check_without_a_worker(rmq_uri: str, names: Names) -> None:
    missing = run_health_check(rmq_uri, names.task_queue)  # the queue does not exist yet
    assert missing.returncode == 1
    with rmq.RmqThreadCommunicator.connect(rmq_uri, **names.options()) as comm:
        comm.task_send("waiting", no_reply=True)  # declares the queue; nobody consumes it
        idle = run_health_check(rmq_uri, names.task_queue)
    assert idle.returncode == 1 and idle.stdout == "1 waiting, 0 consuming\n"
    unreachable = run_health_check(UNREACHABLE, names.task_queue)
    assert unreachable.returncode == 1 and "nothing listening on 127.0.0.1:1" in unreachable.stderr


@pytest.mark.parametrize(
    ("url", "code"),
    [("{broker}", 0), (UNREACHABLE, 1), ("http://127.0.0.1/", 2)],
    ids=["reachable", "unreachable", "bad-url"],
)
def test_inspect_exit_codes(url: str, code: int, rmq_uri: str) -> None:
    """The table of exit codes in the page's health-check section."""
    run = subprocess.run(
        [sys.executable, "-m", "kiwipy", "inspect", "--url", url.format(broker=rmq_uri)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == code, run.stderr
    table = re.search(
        r"\| exit code \| meaning \|\n\| --- \| --- \|\n(.*?)\n\n", PAGE.read_text(), re.S
    )
    assert table is not None and f"| {code} |" in table.group(1)


def test_default_vhost_spelled_as_the_page_says(rmq_uri: str) -> None:
    """``%2f`` in the path is the default virtual host ``/``."""
    assert "amqp://guest:guest@127.0.0.1:5672/%2f" in PAGE.read_text()
    url = rmq_uri.rstrip("/") + "/%2f"
    run = subprocess.run(
        [sys.executable, "-m", "kiwipy", "inspect", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
