"""The ``kiwipy`` command line on the in-process transport: no broker needed.

Commands run in this process through ``cli.main``; the long-running ones run in a thread and
stop by themselves with ``--max-messages`` (signal handling is tested in a subprocess).
Each test uses a broker name of its own, so tests never see each other's messages.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

import kiwipy
from kiwipy import cli
from kiwipy.cli import _common, _running, _send

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def short_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process replies leave at once: no need for the long-running commands' grace."""
    monkeypatch.setattr(_running, "_DRAIN", 0.05)


@pytest.fixture
def url() -> str:
    return f"memory://cli-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def handlers(tmp_path: Path) -> str:
    """A module of callables for ``worker`` and ``serve``, as a ``file.py`` path."""
    path = tmp_path / "handlers.py"
    path.write_text(
        textwrap.dedent(
            """
            import time

            def square(task):
                return task["x"] ** 2

            def divide(task):
                return task["x"] / task["y"]

            def slow(task):
                time.sleep(task)
                return task

            def echo_with_comm(comm, msg):
                return [type(comm).__name__, msg]

            async def coro(msg):
                return {"async": msg}

            NOT_CALLABLE = 42

            def reject(task):
                import kiwipy
                raise kiwipy.TaskRejected("not mine")
            """
        )
    )
    return str(path)


class Output:
    """Everything the commands printed so far, accumulated from capsys."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.out = ""
        self.err = ""

    def read(self) -> Output:
        captured = self.capsys.readouterr()
        self.out += captured.out
        self.err += captured.err
        return self

    def wait_for(self, text: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.read().err + self.out:
            assert time.monotonic() < deadline, f"{text!r} not printed; stderr: {self.err}"
            time.sleep(0.01)


@pytest.fixture
def output(capsys: pytest.CaptureFixture[str]) -> Output:
    return Output(capsys)


class Background:
    """``cli.main(argv)`` on a thread."""

    def __init__(self, argv: list[str]) -> None:
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(argv,), daemon=True)
        self.thread.start()

    def _run(self, argv: list[str]) -> None:
        self.code = cli.main(argv)

    def join(self, timeout: float = 10.0) -> int | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the command did not stop"
        return self.code


def one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"kiwipy {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


# Arguments, help and input errors


def test_help_lists_every_command(output: Output) -> None:
    assert cli.main(["--help"]) == 0
    for command in ("demo", "send", "rpc", "broadcast", "worker", "serve", "listen", "inspect"):
        assert command in output.read().out


def test_no_command_is_a_usage_error(output: Output) -> None:
    assert cli.main([]) == 2
    err = output.read().err
    assert err.startswith("kiwipy: error: the following arguments are required: COMMAND")
    assert err.endswith("(see: kiwipy --help)\n") and err.count("\n") == 1


def run_cli(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``python -m kiwipy *argv`` in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "kiwipy", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["worker", "json:dumps", "--prefetch", "-3"],
            "argument --prefetch: -3 is not a whole number from 0 to 65535",
        ),
        (
            ["worker", "json:dumps", "--max-messages", "0"],
            "argument --max-messages: 0 is not a whole number, 1 or more",
        ),
        (
            ["worker", "json:dumps", "--concurrency", "0"],
            "argument --concurrency: 0 is not a whole number from 1 to",
        ),
        (["send", "--wait", "1", "--timeout", "-1"], "argument --timeout: -1 is not a number"),
        (["rpc", "x", "1", "--timeout", "nan"], "argument --timeout: nan is not a number"),
        (["serve", "x", "json:dumps", "--grace", "-1"], "argument --grace: -1 is not a number"),
        (["dead", "list", "--limit", "0"], "argument --limit: 0 is not a whole number"),
        (["send", "1", "--encoder", "pickle"], "argument --encoder: invalid choice: 'pickle'"),
        (
            ["listen", "--subject", "["],
            "bad --subject pattern '[': unterminated character set at position 0",
        ),
        (
            ["send", '{"a": 1,'],
            "the body looks like JSON but is not valid JSON (Expecting property name",
        ),
        (["send", "[1, 2"], "to send this text as a plain string, add --as string"),
        (
            ["send", "1", "--url", "amqp://guest:secret@127.0.0.1:1/?heartbeat=abc"],
            "bad URL 'amqp://guest:***@127.0.0.1:1/?heartbeat=abc': URL parameter "
            "heartbeat='abc' is invalid: it must be a whole number of seconds",
        ),
        (
            ["inspect", "--url", "amqp://127.0.0.1:1/?hearbeat=30"],
            "unknown URL parameter 'hearbeat' (known: auth, ",
        ),
        (
            ["listen", "--url", "memory://x?heartbeat=30"],
            "unknown URL parameter 'heartbeat': memory:// URLs take no parameters",
        ),
    ],
)
def test_input_is_checked_before_use(argv: list[str], message: str) -> None:
    # The listen and inspect URLs point at port 1 or at memory: a check that came after
    # connecting would fail differently (or, for listen, wait for broadcasts forever).
    if "--url" not in argv:
        argv = [*argv, "--url", "memory://checks"]
    result = run_cli(*argv, timeout=20)
    assert result.returncode == 2, result.stderr
    label = " ".join(argv[:2]) if argv[0] == "dead" else argv[0]
    line = one_error_line(result.stderr, label)
    assert message in line
    assert "secret" not in line
    assert result.stdout == ""


def test_body_after_options_between_positionals(output: Output, url: str) -> None:
    assert cli.main(["rpc", "nobody", "--timeout", "1", '{"x": 1}', "--url", url]) == 1
    assert "nobody answers RPCs as 'nobody'" in one_error_line(output.read().err, "rpc")
    output.err = ""
    assert cli.main(["rpc", "nobody", "--timeout", "1", "1", "2", "--url", url]) == 2
    assert "unrecognized arguments: 1 2" in output.read().err


def test_version() -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"kiwipy {kiwipy.__version__}\n")


def test_unknown_encoder_is_a_usage_error(output: Output, url: str) -> None:
    assert cli.main(["send", "1", "--url", url, "--encoder", "pickle"]) == 2
    assert "invalid choice: 'pickle'" in one_error_line(output.read().err, "send")


def test_wrong_event_loop_setting_is_a_usage_error_not_a_bad_url(
    output: Output, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KIWIPY_EVENT_LOOP", "trio")
    assert cli.main(["send", "1", "--url", url]) == 2
    line = one_error_line(output.read().err, "send")
    assert "KIWIPY_EVENT_LOOP='trio': expected 'uvloop' or 'asyncio'" in line
    assert "bad URL" not in line


def test_url_defaults_to_env_then_local_rabbitmq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIWIPY_URL", raising=False)
    parser = cli.build_parser()
    assert parser.parse_args(["send", "1"]).url == "amqp://guest:guest@127.0.0.1:5672/"
    assert parser.parse_args(["demo"]).url == "sqlite://"  # a new file in a temporary folder
    monkeypatch.setenv("KIWIPY_URL", "memory://from-env")
    assert cli.build_parser().parse_args(["rpc", "x"]).url == "memory://from-env"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1/", "it must start with amqp://, amqps://, memory:// or sqlite://"),
        ("amqp://guest:secret@127.0.0.1:notaport/", "bad URL 'amqp://guest:***@127.0.0.1"),
        ("amqp:///", "it names no host"),
    ],
)
def test_bad_url(output: Output, url: str, message: str) -> None:
    assert cli.main(["send", "1", "--url", url]) == 2
    line = one_error_line(output.read().err, "send")
    assert message in line
    assert "secret" not in line


def test_missing_body(output: Output, url: str) -> None:
    assert cli.main(["send", "--url", url]) == 2
    assert "no message body" in one_error_line(output.read().err, "send")


def test_body_and_file_together(output: Output, url: str, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text("1")
    assert cli.main(["send", "1", "--file", str(body), "--url", url]) == 2
    assert "not both" in one_error_line(output.read().err, "send")


def test_unreadable_and_undecodable_body_files(output: Output, url: str, tmp_path: Path) -> None:
    assert cli.main(["send", "--file", str(tmp_path / "missing"), "--url", url]) == 2
    assert "cannot read the body" in one_error_line(output.read().err, "send")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    output.err = ""
    assert cli.main(["send", "--file", str(binary), "--url", url]) == 2
    assert "not UTF-8" in one_error_line(output.read().err, "send")


def test_invalid_json_with_as_json(output: Output, url: str) -> None:
    assert cli.main(["send", "{nope", "--as", "json", "--url", url]) == 2
    assert "not valid JSON" in one_error_line(output.read().err, "send")


def parse_body(argv: list[str]) -> object:
    args = cli.build_parser().parse_args(["send", *argv])
    return _common.read_body(args)


@pytest.mark.parametrize(
    ("argv", "body"),
    [
        (["42"], 42),
        (['{"x": 1, "tags": ["a"]}'], {"x": 1, "tags": ["a"]}),
        (['"42"'], "42"),
        (["hello world"], "hello world"),
        (["null"], None),
        (["42", "--as", "string"], "42"),
        (["[1, 2]", "--as", "json"], [1, 2]),
    ],
)
def test_body_is_json_when_it_parses_else_a_string(argv: list[str], body: object) -> None:
    assert parse_body(argv) == body


def test_body_from_file_and_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "task.json"
    path.write_text('{"x": 3}\n')
    assert parse_body(["--file", str(path)]) == {"x": 3}
    path.write_text("plain text\n")
    assert parse_body(["--file", str(path)]) == "plain text"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'[1, "two"]\n')))
    assert parse_body(["-"]) == [1, "two"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "is not of the form module:function"),
        ("kiwipy_no_such_module:f", "cannot import 'kiwipy_no_such_module': ModuleNotFoundError"),
        ("json:no_such_function", "'json' has no attribute 'no_such_function'"),
        ("missing_file.py:f", "no such file"),
    ],
)
def test_callable_that_cannot_be_loaded(output: Output, url: str, spec: str, message: str) -> None:
    assert cli.main(["worker", spec, "--url", url]) == 2
    assert message in one_error_line(output.read().err, "worker")


def test_callable_that_is_not_callable_or_fails_on_import(
    output: Output, url: str, handlers: str, tmp_path: Path
) -> None:
    assert cli.main(["serve", "x", f"{handlers}:NOT_CALLABLE", "--url", url]) == 2
    assert "is not callable" in one_error_line(output.read().err, "serve")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('import-time failure')\n")
    output.err = ""
    assert cli.main(["worker", f"{broken}:f", "--url", url]) == 2
    assert "RuntimeError: import-time failure" in one_error_line(output.read().err, "worker")


def test_unexpected_error_is_one_line(
    output: Output, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(args: object, required: bool = True) -> object:
        raise RuntimeError("something odd")

    monkeypatch.setattr(_send, "read_body", boom)
    assert cli.main(["send", "1", "--url", url]) == 1
    assert "RuntimeError: something odd" in one_error_line(output.read().err, "send")


def test_connect_failure_is_one_line(
    output: Output, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(url: str, **options: object) -> object:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(_common, "connect", refuse)
    assert cli.main(["rpc", "x", "1", "--url", url]) == 1
    line = one_error_line(output.read().err, "rpc")
    assert f"cannot connect to {url}: ConnectionRefusedError" in line


def test_helpers() -> None:
    assert _common.mask_url("amqp://u:pw@h:5672/v") == "amqp://u:***@h:5672/v"
    assert _common.mask_url("memory://x") == "memory://x"
    assert _common.format_value({"a": (1, 2)}) == '{"a": [1, 2]}'
    assert _common.format_value({1, 2}) == "{1, 2}"


# Tasks


def test_send_without_wait(output: Output, url: str) -> None:
    assert cli.main(["send", '{"x": 1}', "--url", url, "--queue", "q1"]) == 0
    assert "task sent to queue 'q1'" in output.read().err
    assert output.out == ""


def test_worker_and_send_wait(output: Output, url: str, handlers: str) -> None:
    worker = Background(["worker", f"{handlers}:square", "--url", url, "--max-messages", "2"])
    assert cli.main(["send", "--wait", '{"x": 7}', "--url", url]) == 0
    assert cli.main(["send", "--wait", '{"x": 3}', "--url", url, "--encoder", "yaml"]) == 0
    assert worker.join() == 0
    output.read()
    assert output.out.splitlines() == ["49", "9"]
    assert "kiwipy worker: ready: " in output.err
    assert "kiwipy worker: stopped; 2 tasks handled" in output.err


@pytest.mark.parametrize("encoder", ["json", "msgpack"])
def test_worker_with_other_encoders_and_queue(
    output: Output, url: str, handlers: str, encoder: str
) -> None:
    common = ["--url", url, "--encoder", encoder, "--queue", "squares"]
    worker = Background(["worker", f"{handlers}:square", "--max-messages", "1", *common])
    assert cli.main(["send", "--wait", '{"x": 5}', *common]) == 0
    assert worker.join() == 0
    assert output.read().out == "25\n"


def test_task_that_raises(output: Output, url: str, handlers: str) -> None:
    worker = Background(["worker", f"{handlers}:divide", "--url", url, "--max-messages", "1"])
    assert cli.main(["send", "--wait", '{"x": 1, "y": 0}', "--url", url]) == 1
    assert worker.join() == 0
    output.read()
    lines = [line for line in output.err.splitlines() if line.startswith("kiwipy send")]
    assert lines == [
        "kiwipy send: error: the remote side raised ZeroDivisionError: division by zero"
    ]
    assert "1 task handled (1 failed)" in output.err


def test_send_wait_times_out(output: Output, url: str) -> None:
    assert cli.main(["send", "--wait", "1", "--timeout", "0.2", "--url", url]) == 1
    line = one_error_line(output.read().err, "send")
    assert "no result within 0.2 s (is a worker taking tasks from queue 'kiwipy.tasks'?)" in line


def test_worker_with_communicator_verbose_and_coroutines(
    output: Output, url: str, handlers: str
) -> None:
    worker = Background(
        ["worker", f"{handlers}:echo_with_comm", "--with-communicator", "-v"]
        + ["--url", url, "--max-messages", "1"]
    )
    assert cli.main(["send", "--wait", "hi", "--url", url]) == 0
    assert worker.join() == 0
    worker = Background(["worker", f"{handlers}:coro", "--url", url, "--max-messages", "1"])
    assert cli.main(["send", "--wait", "3", "--url", url]) == 0
    assert worker.join() == 0
    output.read()
    assert output.out.splitlines() == ['["MemoryCommunicator", "hi"]', '{"async": 3}']
    assert 'task "hi" -> ["MemoryCommunicator", "hi"]' in output.err


def test_worker_shows_progress(
    output: Output, url: str, handlers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_running, "_PROGRESS_INTERVAL", 0.05)
    worker = Background(["worker", f"{handlers}:slow", "--url", url, "--max-messages", "2"])
    assert cli.main(["send", "--wait", "0.3", "--url", url]) == 0
    assert cli.main(["send", "--wait", "0.3", "--url", url]) == 0
    assert worker.join() == 0
    output.read()
    progress = [line for line in output.err.splitlines() if line.startswith("kiwipy worker: 1 ")]
    assert progress and progress[0].startswith("kiwipy worker: 1 task handled, ")
    assert progress[0].endswith("/s")


# RPC


def test_serve_and_rpc(output: Output, url: str, handlers: str) -> None:
    server = Background(
        ["serve", "squarer", f"{handlers}:square", "--url", url, "--max-messages", "2"]
    )
    output.wait_for("kiwipy serve: ready: ")
    assert cli.main(["rpc", "squarer", '{"x": 12}', "--url", url]) == 0
    assert output.read().out == "144\n"
    assert cli.main(["serve", "squarer", f"{handlers}:square", "--url", url]) == 1
    assert "someone already answers RPCs as 'squarer'" in output.read().err
    assert cli.main(["rpc", "squarer", '{"x": 2}', "--url", url, "--encoder", "yaml"]) == 0
    assert server.join() == 0
    assert output.read().out == "144\n4\n"
    assert "kiwipy serve: stopped; 2 calls handled" in output.err


def test_rpc_that_raises(output: Output, url: str, handlers: str) -> None:
    server = Background(
        ["serve", "once", f"{handlers}:divide", "--url", url, "--max-messages", "1"]
    )
    output.wait_for("answers RPCs to 'once'")
    assert cli.main(["rpc", "once", '{"x": 1, "y": 0}', "--url", url]) == 1
    assert server.join() == 0
    lines = [line for line in output.read().err.splitlines() if line.startswith("kiwipy rpc")]
    assert lines == [
        "kiwipy rpc: error: the remote side raised ZeroDivisionError: division by zero"
    ]


def test_rpc_to_unknown_recipient(output: Output, url: str) -> None:
    assert cli.main(["rpc", "nobody", "1", "--url", url]) == 1
    line = one_error_line(output.read().err, "rpc")
    assert "nobody answers RPCs as 'nobody' (UnroutableError)" in line


# Broadcasts


def test_listen_with_filters(output: Output, url: str) -> None:
    listener = Background(
        ["listen", "--subject", "job.*.finished", "--sender", "eng*", "--url", url]
        + ["--max-messages", "2"]
    )
    output.wait_for("kiwipy listen: ready: listening for broadcasts with subject")
    sends = [
        ['{"pk": 1}', "--subject", "job.1.finished", "--sender", "engine"],
        ['{"pk": 2}', "--subject", "job.2.failed", "--sender", "engine"],
        ['{"pk": 3}', "--subject", "job.3.finished", "--sender", "other"],
        ["--subject", "job.4.finished", "--sender", "engine", "--correlation-id", "c4"],
    ]
    for argv in sends:
        assert cli.main(["broadcast", *argv, "--url", url]) == 0
    assert listener.join() == 0
    output.read()
    assert output.out.splitlines() == [
        '[job.1.finished] from engine: {"pk": 1}',
        "[job.4.finished] from engine: null (correlation id c4)",
    ]
    assert "kiwipy broadcast: sent (subject 'job.1.finished', sender 'engine')" in output.err
    assert "kiwipy listen: stopped; 2 broadcasts handled" in output.err


def test_listen_json(output: Output, url: str) -> None:
    listener = Background(["listen", "--json", "--url", url, "--max-messages", "1"])
    output.wait_for("kiwipy listen: ready: listening for broadcasts at")
    assert cli.main(["broadcast", "[1, 2]", "--subject", "s", "--url", url]) == 0
    assert listener.join() == 0
    record = json.loads(output.read().out)
    assert record == {"subject": "s", "sender": None, "correlation_id": None, "body": [1, 2]}


# Inspect and demo


def test_inspect_memory(output: Output, url: str) -> None:
    for body in ("1", "2"):
        assert cli.main(["send", body, "--url", url]) == 0
    assert cli.main(["inspect", "--url", url]) == 0
    text = output.read().out
    assert "broker: kiwipy in-process broker" in text
    assert "queue kiwipy.tasks: 2 ready, 0 in progress, 0 dead-lettered" in text
    output.out = ""
    assert cli.main(["inspect", "--json", "--url", url, "--queue", "other"]) == 0
    report = json.loads(output.read().out)
    assert report["transport"] == "memory"
    assert report["memory_queues"] == [{"name": "other", "messages": 0, "unacked": 0, "dead": 0}]


def test_inspect_unreachable_broker(output: Output) -> None:
    assert cli.main(["inspect", "--url", "amqp://guest:guest@127.0.0.1:1/"]) == 1
    line = one_error_line(output.read().err, "inspect")
    assert "cannot connect to amqp://guest:***@127.0.0.1:1/" in line


DEMO_STEPS = (
    "square 6 = 36",
    "the client caught RemoteException: division by zero",
    "rendered by grace",
    "calculator: 2 + 3 = 5",
    "raised UnroutableError",
    "grace heard: job.1.finished, job.3.finished",
    "14 checks passed",
)


def demo_workers(text: str) -> dict[str, int]:
    """:returns: the worker PIDs the demo's output names."""
    line = next(line for line in text.splitlines() if line.startswith("Started three worker"))
    return {name: int(pid) for name, pid in re.findall(r"(\w+) \(pid (\d+)\)", line)}


def demo_folder(text: str) -> Path:
    """:returns: the temporary folder the demo's first line names."""
    found = re.search(r"a temporary folder, (/\S+)/demo\.db", text.splitlines()[0])
    assert found, text
    return Path(found.group(1))


def alive(pid: int) -> bool:
    """:returns: whether process *pid* exists (not even as a zombie)."""
    return Path(f"/proc/{pid}").exists()


def test_demo_runs_worker_processes_over_a_temporary_sqlite_file(output: Output) -> None:
    started = time.monotonic()
    assert cli.main(["demo"]) == 0
    assert time.monotonic() - started < 10
    text = output.read().out
    assert text.startswith("kiwipy demo on a SQLite file in a temporary folder, /")
    for expected in DEMO_STEPS:
        assert expected in text
    workers = demo_workers(text)
    assert sorted(workers) == ["ada", "grace", "linus"]
    assert len({*workers.values(), os.getpid()}) == 4  # three processes besides this one
    assert f"The client is this process (pid {os.getpid()})." in text
    assert f"computed by ada (pid {workers['ada']})" in text
    assert f"answered by linus (pid {workers['linus']})" in text
    folder = demo_folder(text)
    assert f"Ended the worker processes {', '.join(map(str, workers.values()))}" in text
    assert f"removed {folder}." in text
    assert not folder.exists()
    assert not any(alive(pid) for pid in workers.values())
    assert 25 <= len(text.splitlines()) <= 45
    assert output.err == ""


def test_demo_on_a_given_sqlite_file_keeps_it(output: Output, tmp_path: Path) -> None:
    path = tmp_path / "my demo.db"
    assert cli.main(["demo", "--url", f"sqlite:///{path}"]) == 0
    text = output.read().out
    assert text.startswith(f"kiwipy demo on the SQLite file {path} (kept afterwards")
    assert "14 checks passed" in text
    assert f"and kept {path}." in text
    assert path.is_file()
    assert not any(alive(pid) for pid in demo_workers(text).values())


def test_demo_in_process(output: Output) -> None:
    assert cli.main(["demo", "--url", "memory://"]) == 0
    text = output.read().out
    assert text.startswith("kiwipy demo on the in-process transport (memory://demo-")
    assert "Three workers (ada, grace, linus) and the client share this process." in text
    for expected in DEMO_STEPS:
        assert expected in text
    assert "pid" not in text
    assert output.err == ""


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://x/", "it must start with amqp://, amqps://, sqlite:// or memory://"),
        ("sqlite://host/x.db", "it has a host part ('host')"),
    ],
)
def test_demo_bad_url(output: Output, url: str, message: str) -> None:
    assert cli.main(["demo", "--url", url]) == 2
    assert message in one_error_line(output.read().err, "demo")


def test_demo_stops_cleanly_on_sigint() -> None:
    process = start(["demo"])
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("Started three worker"):
        lines.append(process.stdout.readline())
        assert lines[-1], f"the demo ended before its workers started: {lines}"
    workers = demo_workers("".join(lines))
    assert all(alive(pid) for pid in workers.values())
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "kiwipy demo: interrupted"
    folder = demo_folder("".join(lines))
    assert f"removed {folder}" in err
    assert not folder.exists()
    assert not any(alive(pid) for pid in workers.values())
    assert "checks passed" not in out


# Signals, in a subprocess


def start(argv: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "kiwipy", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_ready(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    line = process.stderr.readline()
    assert ": ready: " in line, line
    return line


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_long_running_commands_stop_cleanly_on_signals(
    signum: signal.Signals, handlers: str
) -> None:
    process = start(["worker", f"{handlers}:square", "--url", "memory://signals"])
    wait_ready(process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "kiwipy worker: stopped; 0 tasks handled" in err
    assert "Traceback" not in err


def test_inspect_watch_memory(output: Output, url: str) -> None:
    for body in ("1", "2"):
        assert cli.main(["send", body, "--url", url]) == 0
    argv = ["inspect", "--watch", "--json", "--count", "2", "--interval", "0.05", "--url", url]
    assert cli.main(argv) == 0
    first, second = (json.loads(line) for line in output.read().out.splitlines())
    assert [q["name"] for q in second["queues"]] == ["kiwipy.tasks", "kiwipy.tasks.dead"]
    assert second["queues"][0]["messages"] == 2 and second["queues"][0]["depth_rate"] == 0
    assert first["queues"][0]["depth_rate"] is None
    assert second["queues"][1]["dead_letter"] is True


@pytest.mark.parametrize(
    ("option", "value"), [("--interval", "0"), ("--interval", "-1"), ("--count", "0")]
)
def test_inspect_watch_refuses_bad_numbers(output: Output, url: str, option: str, value: str):
    assert cli.main(["inspect", "--watch", option, value, "--url", url]) != 0
    assert option in output.read().err


def test_inspect_count_needs_watch(output: Output, url: str) -> None:
    assert cli.main(["inspect", "--count", "2", "--url", url]) != 0
    assert "--count goes with --watch" in output.read().err


def test_shared_options_may_come_before_the_command(output: Output, url: str) -> None:
    """``kiwipy --url URL COMMAND``, as many tools take their global options."""
    assert cli.main(["--url", url, "rpc", "nobody", "--timeout", "1", "1"]) == 1
    assert "nobody answers RPCs as 'nobody'" in one_error_line(output.read().err, "rpc")
    output.err = ""
    assert cli.main([f"--url={url}", "--encoder", "json", "send", "1"]) == 0
    output.read().err = ""
    assert cli.main(["--encoder", "pickle", "send", "1", "--url", url]) == 2
    assert "invalid choice: 'pickle'" in one_error_line(output.read().err, "send")
    parser = cli.build_parser()
    assert cli._parse(parser, ["--url", url, "inspect"]).url == url
    assert cli._parse(parser, ["inspect", "--url", url]).url == url
