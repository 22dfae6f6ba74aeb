"""``kiwipy demo``: a short narrated tour of tasks, RPC and broadcasts.

Three worker communicators (ada, grace, linus) and a client share one transport: the
in-process one by default (a fresh ``memory://demo-<random>`` broker), or RabbitMQ with
exchange and queue names unique to the run, removed again at the end. The demo checks every
result it shows; a step that misbehaves stops it with exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from .. import exceptions
from ..communications import Communicator, connect
from ..filters import BroadcastFilter
from ..futures import Future
from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    check_url,
    connect_options,
    err,
    is_sqlite,
    mask_url,
    out,
)

__all__ = ("run_demo",)

WORKERS = ("ada", "grace", "linus")
GPU_WORKER = "grace"
WAIT = 10.0


class DemoFailed(Exception):
    """A step of the demo did not behave as it should."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailed(message)


def say(text: str = "") -> None:
    out(text)


class Demo:
    """The communicators of one demo run and what their subscribers saw."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.url = url
        self.options = options
        self.communicators: dict[str, Communicator] = {}
        self.lock = threading.Lock()
        self.passed_on: dict[Any, list[str]] = {}
        self.heard: dict[str, list[str]] = {}
        self.checks = 0

    def check(self, condition: bool, message: str) -> None:
        check(condition, message)
        self.checks += 1

    # Setting up

    def connect_all(self) -> None:
        for name in (*WORKERS, "client"):
            self.communicators[name] = connect(self.url, **self.options)
        for name in WORKERS:
            self.communicators[name].add_task_subscriber(self.task_subscriber(name))

    def close_all(self) -> None:
        for communicator in self.communicators.values():
            try:
                communicator.close()
            except Exception as exc:  # keep closing the others
                err(f"kiwipy demo: closing a communicator failed: {exc}")

    @property
    def client(self) -> Communicator:
        return self.communicators["client"]

    def task_subscriber(self, name: str) -> Callable[[Any, Any], Any]:
        def subscriber(_communicator: Any, task: Any) -> Any:
            op = task["op"]
            if op == "render" and name != GPU_WORKER:
                with self.lock:
                    self.passed_on.setdefault(task["frame"], []).append(name)
                raise exceptions.TaskRejected(f"{name} has no GPU")
            time.sleep(0.05)  # pretend to work, so that the tasks spread over the workers
            if op == "square":
                return {"worker": name, "value": task["x"] ** 2}
            if op == "divide":
                return {"worker": name, "value": task["x"] / task["y"]}
            if op == "render":
                return {"worker": name, "value": f"frame {task['frame']} rendered"}
            raise ValueError(f"unknown operation {op!r}")

        return subscriber

    # The steps

    def tasks(self) -> None:
        say("1. Tasks. The client sends six tasks, 'square x' for x = 1..6, to the shared")
        say("   queue. Whichever worker is free takes the next one; each result comes back")
        say("   to the client as a future.")
        futures = {x: self.client.task_send({"op": "square", "x": x}) for x in range(1, 7)}
        for x, future in futures.items():
            reply = result(future)
            self.check(reply["value"] == x * x, f"square {x} gave {reply['value']}")
            say(f"   square {x} = {reply['value']:<3} computed by {reply['worker']}")
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
        for frame, future in futures.items():
            reply = result(future)
            self.check(reply["worker"] == GPU_WORKER, f"frame {frame} rendered by a worker w/o GPU")
            with self.lock:
                refused = list(dict.fromkeys(self.passed_on.get(frame, [])))
            route = f"refused by {' and '.join(refused)}, then " if refused else ""
            say(f"   frame {frame}: {route}rendered by {reply['worker']}")
        say()

    def rpc(self) -> None:
        say("4. RPC. linus offers a 'calculator' RPC; anyone can call it by that name.")

        def calculator(_communicator: Any, msg: Any) -> Any:
            return {"sum": msg["x"] + msg["y"], "by": "linus"}

        self.communicators["linus"].add_rpc_subscriber(calculator, "calculator")
        reply = result(self.client.rpc_send("calculator", {"x": 2, "y": 3}))
        self.check(reply["sum"] == 5, f"calculator said 2 + 3 = {reply['sum']}")
        say(f"   calculator: 2 + 3 = {reply['sum']} (answered by {reply['by']})")
        say("   Calling a name nobody answers to fails at once, instead of waiting forever:")
        try:
            future = self.client.rpc_send("nobody-home", {"x": 1})
            result(future)
        except exceptions.UnroutableError as exc:
            say(f"   rpc to 'nobody-home' raised UnroutableError: {exc}")
            self.check(True, "")
        else:
            raise DemoFailed("an RPC to an unknown recipient did not raise UnroutableError")
        say()

    def broadcasts(self) -> None:
        pattern = "job.*.finished"
        say("5. Broadcasts go to every listener. ada hears all of them; grace only wants")
        say(f"   subjects matching the wildcard {pattern!r} (a BroadcastFilter).")
        self.listen("ada", lambda sub: sub)
        self.listen("grace", lambda sub: BroadcastFilter(sub, subject=pattern))
        subjects = ["job.1.finished", "job.2.failed", "job.3.finished"]
        for subject in subjects:
            self.client.broadcast_send({"status": subject.rsplit(".", 1)[-1]}, "client", subject)
        expected = {"ada": subjects, "grace": [s for s in subjects if s.endswith("finished")]}
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and any(
            len(self.heard.get(n, [])) < len(e) for n, e in expected.items()
        ):
            time.sleep(0.02)
        time.sleep(0.1)  # room for a broadcast the filter should have dropped
        for name, wanted in expected.items():
            heard = sorted(self.heard.get(name, []))
            self.check(heard == sorted(wanted), f"{name} heard {heard}, expected {wanted}")
            say(f"   {name} heard: {', '.join(heard)}")
        say()

    def listen(self, name: str, wrap: Callable[[Any], Any]) -> None:
        def subscriber(_comm: Any, body: Any, sender: Any, subject: Any, _cid: Any) -> None:
            with self.lock:
                self.heard.setdefault(name, []).append(subject)

        self.communicators[name].add_broadcast_subscriber(wrap(subscriber))


def result(future: Any) -> Any:
    """Wait for *future* and the futures it resolves to."""
    value = future
    while isinstance(value, Future):
        value = value.result(timeout=WAIT)
    return value


def _setup(args: argparse.Namespace) -> tuple[str, dict[str, Any], str]:
    """:returns: the URL, the connect options and the transport's description."""
    check_url(args.url)
    options: dict[str, Any] = {"encoder": connect_options(args)["encoder"]}
    tag = secrets.token_hex(4)
    if args.url.startswith("memory://"):
        url = args.url if args.url != "memory://" else f"memory://demo-{tag}"
        return url, options, f"the in-process transport ({url})"
    prefix = f"kiwipy-demo-{tag}"
    if is_sqlite(args.url):  # a queue of its own in the file, emptied afterwards
        options.update(task_queue=f"{prefix}.tasks", task_prefetch_count=1)
        return args.url, options, f"the SQLite file of {args.url} (queue {prefix}.tasks)"
    options.update(
        message_exchange=f"{prefix}.messages",
        task_exchange=f"{prefix}.tasks",
        task_queue=f"{prefix}.tasks",
        task_prefetch_count=1,
        testing_mode=True,  # auto-deleting exchanges, expiring queues: a demo leaves nothing
    )
    return args.url, options, f"RabbitMQ at {mask_url(args.url)} (names {prefix}.*)"


@contextmanager
def _cleanup(url: str, options: dict[str, Any]) -> Iterator[None]:
    """On RabbitMQ, remove the run's exchanges and queues afterwards (best effort)."""
    try:
        yield
    finally:
        if is_sqlite(url):
            _empty_sqlite_queue(url, options["task_queue"])
        elif not url.startswith("memory://"):
            asyncio.run(_delete_names(url, options))


def _empty_sqlite_queue(url: str, queue: str) -> None:
    """Drop the dead letters the demo left in its queue of the SQLite file (best effort)."""
    from ..sqlite import SqliteAdmin

    try:
        with SqliteAdmin(url) as admin:
            admin.delete_dead([letter.id for letter in admin.dead_letters(queue)])
    except Exception:  # the queue's name is unique: leftovers harm nobody
        pass


async def _delete_names(url: str, options: dict[str, Any]) -> None:
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
    url, options, where = _setup(args)
    say(f"kiwipy demo on {where}.")
    say(f"Four communicators connect: three workers ({', '.join(WORKERS)}) and a client.")
    say()
    demo = Demo(url, options)
    with _cleanup(url, options):
        try:
            try:
                demo.connect_all()
            except exceptions.ConnectFailed as exc:  # its message names the URL
                raise CliError(str(exc)) from None
            except Exception as exc:
                raise CliError(f"cannot connect to {mask_url(url)}: {exc}") from None
            demo.tasks()
            demo.failing_task()
            demo.rejected_tasks()
            demo.rpc()
            demo.broadcasts()
        except (DemoFailed, exceptions.KiwiError, TimeoutError, KeyError, TypeError) as exc:
            err(f"kiwipy demo: error: a step misbehaved: {type(exc).__name__}: {exc}")
            return EXIT_FAILURE
        finally:
            demo.close_all()
    elapsed = time.monotonic() - started
    say(f"Closed all four communicators. {demo.checks} checks passed in {elapsed:.1f} s.")
    if url.startswith("memory://"):
        say("Run it over RabbitMQ: kiwipy demo --url amqp://guest:guest@127.0.0.1:5672/")
    return EXIT_OK
