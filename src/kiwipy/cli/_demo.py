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

This module runs the tour and cleans up after it; where it runs is :mod:`._demo_transport`'s
choice, the worker processes are :mod:`._demo_processes`', and the narrated steps
:mod:`._demo_steps`'.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .. import exceptions
from ..communications import Communicator
from ._common import EXIT_FAILURE, EXIT_OK, connect_options, describe, err
from ._demo_processes import START_TIMEOUT, WorkerProcesses
from ._demo_steps import Demo, DemoFailed, say
from ._demo_transport import Transport, choose_transport, connect_demo, delete_names
from ._demo_worker import WORKERS, Worker

__all__ = ("run_demo",)

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"


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


def run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    transport = choose_transport(args.url)
    encoder = connect_options(args)["encoder"]
    options = {**transport.options, "encoder": encoder}
    communicators: list[Communicator] = []
    processes = WorkerProcesses()
    finished = False
    try:
        say(f"kiwipy demo on {transport.where}.")
        client = connect_demo(transport.url, options)
        communicators.append(client)
        if transport.in_process:
            for name in WORKERS:
                communicators.append(connect_demo(transport.url, options))
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
        asyncio.run(delete_names(transport.url, options))
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
