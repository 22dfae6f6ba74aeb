"""``kiwipy demo``: a short narrated tour of tasks, RPC and broadcasts.

Three workers (ada, grace, linus, see :mod:`._demo_worker`) and a client share one transport:

* by default a new SQLite file in a temporary folder (``sqlite:////tmp/kiwipy-demo-*/demo.db``),
  with each worker a process of its own and no broker; the folder is removed at the end;
* ``--url sqlite:///path.db``: the same on that file, which is kept;
* ``--url amqp://...``: RabbitMQ, the workers again processes of their own, with exchange and
  queue names unique to the run, removed again at the end;
* ``--url memory://``: the in-process transport, the workers on threads of the demo.

The demo checks every result it shows; a step that misbehaves stops it with exit code 1. It
ends the worker processes it started (by PID) and removes its temporary folder whatever
happens, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import exceptions
from ..communications import Communicator, connect
from ..futures import Future
from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    check_url,
    connect_options,
    describe,
    err,
    mask_url,
    out,
)
from ._demo_worker import GPU_WORKER, GRACE_PATTERN, WORKERS, Worker, status_rpc

__all__ = ("DEFAULT_URL", "run_demo")

#: The demo's default ``--url``: a new SQLite file in a temporary folder.
DEFAULT_URL = "sqlite://"
WAIT = 10.0
#: Seconds the worker processes get to start, and then to stop before SIGKILL.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"


class DemoFailed(Exception):
    """A step of the demo did not behave as it should."""


def say(text: str = "") -> None:
    out(text)


@dataclass
class Transport:
    """Where the demo runs."""

    url: str
    #: The connect options besides the encoder (JSON data: the worker processes get them).
    options: dict[str, Any]
    where: str
    #: Workers on threads of the demo (memory://) rather than processes of their own.
    in_process: bool = False
    #: The temporary folder to remove at the end.
    folder: str | None = None
    #: RabbitMQ names to delete at the end.
    rabbitmq: bool = False
    #: The SQLite file given with --url, kept at the end.
    kept: str | None = None


def _transport(url: str) -> Transport:
    """:returns: the transport *url* asks for; a temporary folder is created for the default.

    :raises CliError: (usage) for a bad URL.
    """
    tag = secrets.token_hex(4)
    prefix = f"kiwipy-demo-{tag}"
    if url == DEFAULT_URL:
        folder = tempfile.mkdtemp(prefix="kiwipy-demo-")
        path = os.path.join(folder, "demo.db")
        return Transport(
            url="sqlite:///" + urllib.parse.quote(path),
            options=_sqlite_options(prefix),
            where=f"a SQLite file in a temporary folder, {path} (no broker)",
            folder=folder,
        )
    if url.startswith("sqlite://"):
        from ..sqlite._files import parse_url

        try:
            path = str(parse_url(url)[0])
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None  # it names the URL
        where = f"the SQLite file {path} (kept afterwards; no broker)"
        return Transport(url=url, options=_sqlite_options(prefix), where=where, kept=path)
    if not url.startswith(("amqp://", "amqps://", "memory://")):
        raise CliError(
            f"bad URL {mask_url(url)!r}: it must start with amqp://, amqps://, sqlite:// or "
            "memory://",
            EXIT_USAGE,
        )
    check_url(url)
    if url.startswith("memory://"):
        url = url if url != "memory://" else f"memory://demo-{tag}"
        where = f"the in-process transport ({url})"
        return Transport(url=url, options={}, where=where, in_process=True)
    options = {
        "message_exchange": f"{prefix}.messages",
        "task_exchange": f"{prefix}.tasks",
        "task_queue": f"{prefix}.tasks",
        "task_prefetch_count": 1,
        "testing_mode": True,  # auto-deleting exchanges, expiring queues: a demo leaves nothing
    }
    where = f"RabbitMQ at {mask_url(url)} (names {prefix}.*)"
    return Transport(url=url, options=options, where=where, rabbitmq=True)


def _sqlite_options(prefix: str) -> dict[str, Any]:
    # A queue of the run's own (a kept file may hold an earlier run's tasks); one task at a
    # time per worker, so that the tasks spread over the workers.
    return {"task_queue": f"{prefix}.tasks", "task_prefetch_count": 1}


def _connect(url: str, options: dict[str, Any]) -> Communicator:
    """:raises CliError: saying why *url* cannot be reached."""
    try:
        return connect(url, **options)
    except ImportError as exc:
        raise CliError(
            f"the {url.split(':', 1)[0]}:// transport is not available ({describe(exc)}); "
            "install it with: pip install 'kiwipy[rmq]'"
        ) from None
    except exceptions.ConnectFailed as exc:  # its message names the URL
        raise CliError(str(exc)) from None
    except Exception as exc:
        raise CliError(f"cannot connect to {mask_url(url)}: {describe(exc)}") from None


@dataclass
class WorkerProcesses:
    """The demo's worker processes: ``python -m kiwipy.cli._demo_worker NAME``."""

    processes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    def start(self, url: str, encoder: str, options: dict[str, Any]) -> None:
        """Start one process per worker; its settings go through its stdin, not argv (which
        everyone on the host can read), and its stdin stays open as its lifeline."""
        import kiwipy

        env = dict(os.environ)
        here = str(Path(kiwipy.__file__).resolve().parents[1])  # the same kiwipy as ours
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        config = json.dumps({"url": url, "encoder": encoder, "options": options}) + "\n"
        for name in WORKERS:
            process = subprocess.Popen(
                [sys.executable, "-m", "kiwipy.cli._demo_worker", name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,  # Ctrl-C in a terminal reaches only the demo
            )
            self.processes[name] = process
            try:
                assert process.stdin is not None
                process.stdin.write(config)
                process.stdin.flush()
            except OSError:  # it died already: wait_ready() says so
                pass

    def wait_ready(self, timeout: float) -> dict[str, int]:
        """:returns: each worker's PID, once all are ready.

        :raises CliError: if one exits or is not ready within *timeout* seconds.
        """
        pids: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for name, process in self.processes.items():
                assert process.stdout is not None
                selector.register(process.stdout, selectors.EVENT_READ, name)
            while len(pids) < len(self.processes):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    late = ", ".join(n for n in self.processes if n not in pids)
                    raise CliError(f"the worker process(es) {late} did not start in {timeout:g} s")
                for key, _ in selector.select(remaining):
                    name = key.data
                    line = key.fileobj.readline()  # type: ignore[union-attr]
                    selector.unregister(key.fileobj)
                    if line.startswith("ready "):
                        pids[name] = int(line.split()[1])
                        continue
                    if line.startswith("error "):
                        why = line[len("error ") :].strip()
                    else:
                        why = f"it exited with code {self.processes[name].wait(STOP_TIMEOUT)}"
                    raise CliError(f"the worker process {name} did not start: {why}")
        return pids

    def stop(self) -> list[int]:
        """End every worker process: close its stdin, SIGTERM it by PID, SIGKILL it after
        :data:`STOP_TIMEOUT` seconds. :returns: the PIDs ended."""
        for process in self.processes.values():
            _close(process.stdin)
            if process.poll() is None:
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes.values():
            try:
                process.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _close(process.stdout)
        return [p.pid for p in self.processes.values()]


def _close(stream: Any) -> None:
    try:
        if stream is not None:
            stream.close()
    except OSError:  # a pipe to a process that is gone
        pass


class Demo:
    """The steps of the tour, run from the client; the workers report over RPC."""

    def __init__(self, client: Communicator, pids: dict[str, int]) -> None:
        self.client = client
        self.pids = pids
        self.checks = 0

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            raise DemoFailed(message)
        self.checks += 1

    def status(self, name: str) -> dict[str, Any]:
        reply: dict[str, Any] = result(self.client.rpc_send(status_rpc(name), {}))
        return reply

    def from_worker(self, reply: Any) -> str:
        """:returns: who computed *reply*, after checking it came from that worker's PID."""
        name: str = reply["worker"]
        pid = reply["pid"]
        if pid != self.pids[name]:
            raise DemoFailed(f"{name} answered from pid {pid}, not from {self.pids[name]}")
        return f"{name} (pid {pid})" if pid != os.getpid() else name

    # The steps

    def tasks(self) -> None:
        say("1. Tasks. The client sends six tasks, 'square x' for x = 1..6, to the shared")
        say("   queue. Whichever worker is free takes the next one; each result comes back")
        say("   to the client as a future.")
        started = time.monotonic()
        futures = {x: self.client.task_send({"op": "square", "x": x}) for x in range(1, 7)}
        for x, future in futures.items():
            reply = result(future)
            self.check(reply["value"] == x * x, f"square {x} gave {reply['value']}")
            say(f"   square {x} = {reply['value']:<3} computed by {self.from_worker(reply)}")
        say(f"   (six round trips in {time.monotonic() - started:.2f} s)")
        say()

    def failing_task(self) -> None:
        say("2. A task that fails. The client asks a worker to divide 1 by 0. The worker's")
        say("   exception travels back and is raised at the client as RemoteException:")
        future = self.client.task_send({"op": "divide", "x": 1, "y": 0})
        try:
            result(future)
        except exceptions.RemoteException as exc:
            remote_type = (exc.remote_type or "").rsplit(".", 1)[-1]
            kind = f" ({remote_type} on the worker)" if remote_type else ""
            say(f"   the client caught RemoteException: {exc.args[0]}{kind}")
            self.check(True, "")
        else:
            raise DemoFailed("dividing by zero did not raise RemoteException at the client")
        say()

    def rejected_tasks(self) -> None:
        say(f"3. Rejection. Only {GPU_WORKER} has a GPU. The others refuse 'render' tasks by")
        say("   raising TaskRejected, which puts the task back for another worker.")
        futures = {f: self.client.task_send({"op": "render", "frame": f}) for f in (1, 2, 3)}
        replies = {frame: result(future) for frame, future in futures.items()}
        refused = {name: self.status(name)["refused"] for name in WORKERS}
        for frame, reply in replies.items():
            self.check(reply["worker"] == GPU_WORKER, f"frame {frame} rendered by a worker w/o GPU")
            by = [name for name in WORKERS if frame in refused[name]]
            route = f"refused by {' and '.join(by)}, then " if by else ""
            say(f"   frame {frame}: {route}rendered by {self.from_worker(reply)}")
        say()

    def rpc(self) -> None:
        say("4. RPC. linus offers a 'calculator' RPC; anyone can call it by that name.")
        reply = result(self.client.rpc_send("calculator", {"x": 2, "y": 3}))
        self.check(reply["value"] == 5, f"calculator said 2 + 3 = {reply['value']}")
        say(f"   calculator: 2 + 3 = {reply['value']}, answered by {self.from_worker(reply)}")
        say("   Calling a name nobody answers to fails at once, instead of waiting forever:")
        try:
            result(self.client.rpc_send("nobody-home", {"x": 1}))
        except exceptions.UnroutableError as exc:
            say(f"   rpc to 'nobody-home' raised UnroutableError: {exc}")
            self.check(True, "")
        else:
            raise DemoFailed("an RPC to an unknown recipient did not raise UnroutableError")
        say()

    def broadcasts(self) -> None:
        say("5. Broadcasts go to every listener. ada hears all of them; grace only wants")
        say(f"   subjects matching the wildcard {GRACE_PATTERN!r} (a BroadcastFilter).")
        subjects = ["job.1.finished", "job.2.failed", "job.3.finished"]
        for subject in subjects:
            self.client.broadcast_send({"status": subject.rsplit(".", 1)[-1]}, "client", subject)
        expected = {"ada": subjects, "grace": [s for s in subjects if s.endswith("finished")]}
        deadline = time.monotonic() + WAIT
        heard = self.heard(expected)
        while time.monotonic() < deadline and any(
            len(heard[n]) < len(e) for n, e in expected.items()
        ):
            time.sleep(0.02)
            heard = self.heard(expected)
        time.sleep(0.1)  # room for a broadcast the filter should have dropped
        heard = self.heard(expected)
        for name, wanted in expected.items():
            self.check(heard[name] == sorted(wanted), f"{name} heard {heard[name]}, not {wanted}")
            say(f"   {name} heard: {', '.join(heard[name])}")
        say()

    def heard(self, names: Any) -> dict[str, list[str]]:
        return {name: sorted(self.status(name)["heard"]) for name in names}


def result(future: Any) -> Any:
    """Wait for *future* and the futures it resolves to."""
    value = future
    while isinstance(value, Future):
        value = value.result(timeout=WAIT)
    return value


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ignore Ctrl-C while cleaning up, so that a second one cannot leave workers behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


async def _delete_names(url: str, options: dict[str, Any]) -> None:
    """Remove the run's RabbitMQ exchanges and queues (best effort)."""
    try:
        import aio_pika

        connection = await aio_pika.connect(url, timeout=3.0)
    except Exception:  # nothing to clean up if we cannot get there
        return
    try:
        channel = await connection.channel()
        queue = options["task_queue"]
        for name in (queue, f"{queue}.dead"):
            await channel.queue_delete(name)
        for name in (options["message_exchange"], options["task_exchange"]):
            await channel.exchange_delete(name)
    except Exception:  # best effort: the names are unique, leftovers harm nobody
        pass
    finally:
        await connection.close()


def run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    transport = _transport(args.url)
    encoder = connect_options(args)["encoder"]
    options = {**transport.options, "encoder": encoder}
    communicators: list[Communicator] = []
    processes = WorkerProcesses()
    finished = False
    try:
        say(f"kiwipy demo on {transport.where}.")
        client = _connect(transport.url, options)
        communicators.append(client)
        if transport.in_process:
            for name in WORKERS:
                communicators.append(_connect(transport.url, options))
                Worker(name, communicators[-1]).start()
            pids = {name: os.getpid() for name in WORKERS}
            say(f"Three workers ({', '.join(WORKERS)}) and the client share this process.")
        else:
            processes.start(transport.url, args.encoder, transport.options)
            ready = processes.wait_ready(START_TIMEOUT)
            pids = {name: ready[name] for name in WORKERS}
            listed = ", ".join(f"{name} (pid {pid})" for name, pid in pids.items())
            say(f"Started three worker processes in {time.monotonic() - started:.1f} s: {listed}.")
            say(f"The client is this process (pid {os.getpid()}).")
        say()
        demo = Demo(client, pids)
        try:
            demo.tasks()
            demo.failing_task()
            demo.rejected_tasks()
            demo.rpc()
            demo.broadcasts()
        except (DemoFailed, exceptions.KiwiError, TimeoutError, KeyError, TypeError) as exc:
            err(f"kiwipy demo: error: a step misbehaved: {type(exc).__name__}: {exc}")
            return EXIT_FAILURE
        finished = True
    finally:
        with _uninterrupted():
            _finish(transport, options, communicators, processes, finished)
    elapsed = time.monotonic() - started
    say(f"{demo.checks} checks passed in {elapsed:.1f} s.")
    if not transport.rabbitmq:
        say(f"Run it over RabbitMQ: kiwipy demo --url {RABBITMQ_URL}")
    return EXIT_OK


def _finish(
    transport: Transport,
    options: dict[str, Any],
    communicators: list[Communicator],
    processes: WorkerProcesses,
    finished: bool,
) -> None:
    """Close the communicators, end the worker processes, remove what the run created."""
    report = say if finished else lambda text: err(f"kiwipy demo: {text}")
    done: list[str] = []
    pids = processes.stop()
    if pids:
        done.append(f"ended the worker processes {', '.join(map(str, pids))}")
    for communicator in communicators:
        try:
            communicator.close()
        except Exception as exc:  # keep closing the others
            err(f"kiwipy demo: closing a communicator failed: {describe(exc)}")
    if transport.rabbitmq:
        asyncio.run(_delete_names(transport.url, options))
    if transport.folder is not None:
        try:
            shutil.rmtree(transport.folder)
            done.append(f"removed {transport.folder}")
        except OSError as exc:
            err(f"kiwipy demo: cannot remove {transport.folder}: {describe(exc)}")
    if transport.kept is not None and os.path.exists(transport.kept):
        done.append(f"kept {transport.kept}")
    if done:
        text = " and ".join(done)
        report(text[0].upper() + text[1:] + "." if finished else text)
