"""The narrated steps of ``kiwipy demo`` (:class:`Demo`): tasks, a failing task, rejected
tasks, RPC and broadcasts, each result checked; the workers report over RPC."""

from __future__ import annotations

import os
import time
from typing import Any

from .. import exceptions
from ..communications import Communicator
from ..futures import Future
from ._common import out
from ._demo_worker import GPU_WORKER, GRACE_PATTERN, WORKERS, status_rpc

__all__ = ("WAIT", "Demo", "DemoFailed", "result", "say")

WAIT = 10.0


class DemoFailed(Exception):
    """A step of the demo did not behave as it should."""


def say(text: str = "") -> None:
    out(text)


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
