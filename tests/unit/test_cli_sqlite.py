"""The ``kiwipy`` command line on ``sqlite://`` files: ``inspect`` (queues, live and dead
processes), ``dead list | requeue | park``, and the errors of bad URLs and missing files.

Commands run in this process through ``cli.main``; the processes they look at are real: the
communicators of this test process and of child processes (one of them killed with SIGKILL,
to be seen dead and not yet released).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from kiwipy import cli, sqlite
from tests import _waits as waits

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0

CHILD = """
import sys, kiwipy
comm = kiwipy.connect(sys.argv[1])
comm.add_rpc_subscriber(lambda _comm, msg: msg, "child-rpc")
comm.task_queue("child-q").add_task_subscriber(lambda _comm, task: task)
print("ready", flush=True)
sys.stdin.readline()
comm.close()
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def inspect_json(capsys: pytest.CaptureFixture[str], url: str) -> dict[str, Any]:
    code, out, err = run(capsys, "inspect", "--url", url, "--json")
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def wait_until(check: Callable[[], bool], what: str) -> None:
    waits.wait_until(check, what, WAIT)


def one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"kiwipy {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/tasks.db"  # an absolute path: sqlite:////tmp/...


@pytest.fixture
def child(url: str) -> Iterator[subprocess.Popen[str]]:
    """Another process on the file with a task consumer and an RPC subscriber."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    yield process
    try:
        process.communicate("\n" if process.poll() is None else None, timeout=WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def test_inspect_shows_queues_and_processes(
    capsys: pytest.CaptureFixture[str], url: str, child: subprocess.Popen[str]
) -> None:
    release = threading.Event()
    comm = sqlite.connect(url)
    try:
        comm.add_rpc_subscriber(lambda _comm, msg: msg, "here-rpc")
        queue = comm.task_queue("work", prefetch_count=1)
        started = threading.Event()

        def hold(_comm: Any, task: Any) -> Any:
            started.set()
            release.wait(WAIT)
            return task

        queue.add_task_subscriber(hold)
        for i in range(3):
            queue.task_send(i, no_reply=True)
        assert started.wait(WAIT)

        def settled() -> bool:
            queues = {q["name"]: q for q in inspect_json(capsys, url)["sqlite_queues"]}
            return bool(queues.get("work", {}).get("unsettled") == 1)

        wait_until(settled, "one task in progress")
        report = inspect_json(capsys, url)
        queues = {q["name"]: q for q in report["sqlite_queues"]}
        assert queues["work"] == {
            "name": "work", "ready": 2, "unsettled": 1, "consumers": 1, "dead": 0
        }  # fmt: skip
        assert queues["child-q"]["consumers"] == 1
        processes = {p["pid"]: p for p in report["processes"]}
        assert set(processes) == {os.getpid(), child.pid}
        assert all(p["alive"] for p in processes.values())
        assert processes[child.pid]["consumers"] == {"child-q": 1}
        assert processes[child.pid]["rpc"] == ["child-rpc"]
        assert processes[os.getpid()]["rpc"] == ["here-rpc"]
        assert processes[os.getpid()]["consumers"]["work"] == 1

        code, out, err = run(capsys, "inspect", "--url", url)
        assert code == 0, err
        assert "work" in out and "processes: 2 live" in out
        assert f"pid {child.pid}" in out and "child-rpc" in out
        assert "Traceback" not in err

        code, out, _ = run(capsys, "inspect", "--url", url, "--watch", "--count", "1")
        assert code == 0
        assert "work.dead" in out
    finally:
        release.set()
        comm.close()


def test_inspect_shows_a_killed_process_not_yet_released(
    capsys: pytest.CaptureFixture[str], url: str, child: subprocess.Popen[str]
) -> None:
    # No other process is on the file, so nobody releases the killed one: inspect only looks.
    child.send_signal(signal.SIGKILL)
    child.wait(WAIT)
    report = inspect_json(capsys, url)
    (process,) = report["processes"]
    assert process["pid"] == child.pid and process["alive"] is False
    assert process["rpc"] == ["child-rpc"]  # still registered: not released
    code, out, _ = run(capsys, "inspect", "--url", url)
    assert code == 0 and "DEAD, not yet released" in out
    # inspecting twice changed nothing
    assert inspect_json(capsys, url)["processes"][0]["alive"] is False


def test_dead_list_requeue_and_park(capsys: pytest.CaptureFixture[str], url: str) -> None:
    comm = sqlite.connect(url)
    try:
        queue = comm.task_queue("jobs")
        for i in range(3):
            queue.task_send({"n": i}, no_reply=True)
        code, _, err = run(capsys, "dead", "park", "--url", url, "--queue", "jobs", "--all")
        assert code == 0 and "parked 3 of 3" in err

        code, out, _ = run(capsys, "dead", "list", "--url", url, "--json")
        assert code == 0
        listing = json.loads(out)
        assert listing["total"] == 3
        assert [m["body"] for m in listing["messages"]] == ['{"n": 0}', '{"n": 1}', '{"n": 2}']
        assert {m["reason"] for m in listing["messages"]} == {"parked-by-operator"}
        ids = [m["id"] for m in listing["messages"]]
        code, out, _ = run(capsys, "dead", "list", "--url", url, "--queue", "jobs.dead")
        assert code == 0 and "3 dead-lettered" in out and '{"n": 1}' in out

        # a worker on the file gets what is requeued, woken by the command
        done: list[Any] = []
        queue.add_task_subscriber(lambda _comm, task: done.append(task))
        code, _, err = run(
            capsys, "dead", "requeue", "--url", url, "--queue", "jobs", "--id", str(ids[1])
        )
        assert code == 0 and "requeued 1 of 3" in err
        wait_until(lambda: done == [{"n": 1}], "the requeued task to run")
        code, _, err = run(capsys, "dead", "requeue", "--url", url, "--queue", "jobs", "--all")
        assert code == 0 and "requeued 2 of 2" in err
        wait_until(lambda: len(done) == 3, "every requeued task to run")
        assert sorted(t["n"] for t in done) == [0, 1, 2]
        assert json.loads(run(capsys, "dead", "list", "--url", url, "--json")[1])["total"] == 0

        code, _, err = run(capsys, "dead", "requeue", "--url", url, "--queue", "jobs", "--id", "99")
        assert code == 1 and "no dead-lettered task there has id 99" in one_error_line(err, "dead")
    finally:
        comm.close()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["inspect", "--url", "sqlite://host/x.db"], 2, "it has a host part ('host')"),
        (["dead", "list", "--url", "sqlite://host/x.db"], 2, "it has a host part"),
        (["send", "1", "--url", "sqlite://host/x.db"], 2, "it has a host part"),
        (["inspect", "--url", "sqlite://"], 2, "it has no file path"),
        (["inspect", "--url", "sqlite:///x.db?bogus=1"], 2, "unknown URL parameter 'bogus'"),
        (["inspect", "--url", "sqlite:////no/such/dir/x.db"], 1, "its directory /no/such/dir"),
        (["dead", "list", "--url", "sqlite:////no/such/dir/x.db"], 1, "does not exist"),
        (["send", "1", "--url", "sqlite:////no/such/dir/x.db"], 1, "/no/such/dir"),
        (["dead", "list", "--url", "memory://x"], 2, "give an amqp:// or sqlite:// URL"),
        (["send", "1", "--url", "http://x/"], 2, "memory:// or sqlite://"),
    ],
)
def test_bad_sqlite_urls_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    got, _, err = run(capsys, *argv)
    assert got == code, err
    assert message in one_error_line(err, argv[0])


def test_inspect_never_creates_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    code, _, err = run(capsys, "inspect", "--url", f"sqlite:///{path}")
    assert code == 1
    assert f"the SQLite file {path} does not exist" in one_error_line(err, "inspect")
    assert not path.exists()


def test_a_file_that_is_not_kiwipys(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    other.write_text("not a database")
    code, _, err = run(capsys, "inspect", "--url", f"sqlite:///{other}")
    assert code == 1 and str(other) in one_error_line(err, "inspect")
    empty = tmp_path / "empty.db"
    empty.touch()
    code, _, err = run(capsys, "dead", "list", "--url", f"sqlite:///{empty}")
    assert code == 1 and "no kiwipy tables" in one_error_line(err, "dead")


def test_id_is_for_sqlite_only(capsys: pytest.CaptureFixture[str]) -> None:
    url = "amqp://guest:guest@127.0.0.1:1/"
    code, _, err = run(capsys, "dead", "requeue", "--url", url, "--id", "1")
    assert code == 2 and "--id picks a dead letter of a sqlite:// file" in err
