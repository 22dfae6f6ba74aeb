"""The workers of ``kiwipy demo``: :class:`Worker`, and its own process (``python -m
kiwipy.cli._demo_worker NAME``).

A worker takes the demo's tasks (ada, grace and linus; only grace renders), linus answers
the ``calculator`` RPC, ada and grace listen to broadcasts, and every worker answers the RPC
``<name>.status`` with its PID, the broadcasts it heard and the frames it refused, so the demo
can show what happened inside it.

Run as a process, the worker reads one JSON line from stdin, ``{"url": ..., "encoder": ...,
"options": {...}}``, connects, and writes ``ready <pid>`` (or ``error <text>``) to stdout. It
stops when it gets SIGTERM or its stdin closes (the demo ended, even by SIGKILL); it ignores
SIGINT, which is for the demo to handle.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from .. import encoders, exceptions
from ..communications import Communicator, connect
from ..filters import BroadcastFilter

__all__ = ("GPU_WORKER", "WORKERS", "Worker", "main", "status_rpc")

WORKERS = ("ada", "grace", "linus")
GPU_WORKER = "grace"
CALCULATOR = "linus"
#: The subjects grace wants to hear (a :class:`~kiwipy.BroadcastFilter` wildcard).
GRACE_PATTERN = "job.*.finished"


def status_rpc(name: str) -> str:
    """:returns: the RPC name on which worker *name* reports its status."""
    return f"{name}.status"


class Worker:
    """One demo worker on *communicator*; :meth:`start` subscribes it."""

    def __init__(self, name: str, communicator: Communicator) -> None:
        self.name = name
        self.communicator = communicator
        self.lock = threading.Lock()
        self.heard: list[str] = []
        self.refused: list[Any] = []

    def start(self) -> None:
        comm = self.communicator
        comm.add_task_subscriber(self.on_task)
        comm.add_rpc_subscriber(self.on_status, status_rpc(self.name))
        if self.name == CALCULATOR:
            comm.add_rpc_subscriber(self.on_calculator, "calculator")
        if self.name == "ada":
            comm.add_broadcast_subscriber(self.on_broadcast)
        elif self.name == GPU_WORKER:
            comm.add_broadcast_subscriber(BroadcastFilter(self.on_broadcast, subject=GRACE_PATTERN))

    def reply(self, value: Any) -> dict[str, Any]:
        return {"worker": self.name, "pid": os.getpid(), "value": value}

    def on_task(self, _communicator: Any, task: Any) -> Any:
        op = task["op"]
        if op == "render" and self.name != GPU_WORKER:
            with self.lock:
                self.refused.append(task["frame"])
            raise exceptions.TaskRejected(f"{self.name} has no GPU")
        time.sleep(0.05)  # pretend to work, so that the tasks spread over the workers
        if op == "square":
            return self.reply(task["x"] ** 2)
        if op == "divide":
            return self.reply(task["x"] / task["y"])
        if op == "render":
            return self.reply(f"frame {task['frame']} rendered")
        raise ValueError(f"unknown operation {op!r}")

    def on_calculator(self, _communicator: Any, msg: Any) -> Any:
        return self.reply(msg["x"] + msg["y"])

    def on_status(self, _communicator: Any, _msg: Any) -> Any:
        with self.lock:
            return {"pid": os.getpid(), "heard": list(self.heard), "refused": list(self.refused)}

    def on_broadcast(self, _comm: Any, _body: Any, _sender: Any, subject: Any, _cid: Any) -> None:
        with self.lock:
            self.heard.append(subject)


def main(argv: list[str] | None = None) -> int:
    """Run worker ``argv[0]`` until SIGTERM or the end of stdin. :returns: the exit code."""
    name = (argv if argv is not None else sys.argv[1:])[0]
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    logging.getLogger().addHandler(logging.NullHandler())  # the demo reports, not the library
    try:
        config = json.loads(sys.stdin.readline())
        options: dict[str, Any] = {
            **config["options"],
            "encoder": encoders.get_encoder(config["encoder"]),
        }
        communicator = connect(config["url"], **options)
    except Exception as exc:
        _tell(f"error {type(exc).__name__}: {exc}")
        return 1
    try:
        Worker(name, communicator).start()
        _tell(f"ready {os.getpid()}")
        _on_eof(stop.set)
        while not stop.wait(1.0):
            pass
    except Exception as exc:
        _tell(f"error {type(exc).__name__}: {exc}")
        return 1
    finally:
        communicator.close()
    return 0


def _tell(line: str) -> None:
    try:
        sys.stdout.write(line.replace("\n", " ") + "\n")
        sys.stdout.flush()
    except OSError:  # the demo is gone
        pass


def _on_eof(callback: Callable[[], None]) -> None:
    """Call *callback* when stdin ends (the demo closed it, or died)."""

    def wait() -> None:
        try:
            sys.stdin.read()
        finally:
            callback()

    threading.Thread(target=wait, name="demo-lifeline", daemon=True).start()


if __name__ == "__main__":  # pragma: no cover - run by the demo
    sys.exit(main())
