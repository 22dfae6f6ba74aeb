"""Processes of the ``sqlite://`` fault scenarios, run from the repository root as
``python -m tests.faults._sqlite_proc ROLE '<json config>'``.

Every process prints ``ready`` once it is connected (and consuming, for a worker), then one
line per event, flushed at once, so a parent that kills it at any moment reads only events
that happened. Config keys common to all roles: ``url``, ``options`` (communicator options).

Roles:

``worker``
    Consumes tasks ``{"id": str, ...}``, each taking ``sleep`` seconds (default 0; 60: it
    holds every task it takes until it is killed). For each it appends
    ``start <id> <pid> <time>`` when it begins and ``done <id> <pid> <time>`` when it ends
    (before returning, so before the ack) to ``log``, with one ``write`` on an ``O_APPEND``
    descriptor (atomic for such short lines: several processes share the file), and returns
    the id. Runs until it is stopped.

Every role logs kiwipy's warnings and errors to stderr.
``send``
    Sends ``count`` tasks (``None``: without end) with ids ``<prefix>-<n>``, padded to about
    ``size`` bytes, and prints ``sent <id>`` after each ``task_send`` returns. With
    ``results`` it then awaits every result and prints ``result <id> <value>``; with
    ``each`` it awaits each result before the next send. Prints ``finished`` at the end. A
    :class:`kiwipy.StorageError` prints ``error <message>`` and exits with status 3.
``fill``
    Sends tasks of ``size`` bytes until a send fails, printing ``sent <id>``; prints
    ``full <exception type>: <message>`` at the first failure and waits for a line on stdin
    (the parent frees space meanwhile); then, on the same communicator, consumes as a
    ``worker`` does (logging to ``log``) and prints ``draining``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
import time
from typing import Any

import kiwipy
from kiwipy import sqlite


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _recorder(path: str, sleep: float = 0.0) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def work(_comm: Any, task: dict[str, Any]) -> str:
        os.write(fd, f"start {task['id']} {os.getpid()} {time.time():.6f}\n".encode())
        if sleep:
            await asyncio.sleep(sleep)
        os.write(fd, f"done {task['id']} {os.getpid()} {time.time():.6f}\n".encode())
        return str(task["id"])

    return work


async def _worker(config: dict[str, Any]) -> None:
    comm = await sqlite.async_connect(config["url"], **config.get("options", {}))
    await comm.add_task_subscriber(_recorder(config["log"], config.get("sleep", 0.0)))
    _say("ready")
    await asyncio.Event().wait()  # until stopped


async def _send(config: dict[str, Any]) -> None:
    comm = await sqlite.async_connect(config["url"], **config.get("options", {}))
    _say("ready")
    count = config.get("count")
    pad = "x" * int(config.get("size", 0))
    futures: list[tuple[str, asyncio.Future[Any]]] = []
    try:
        numbers = itertools.count() if count is None else range(count)
        for n in numbers:
            ident = f"{config['prefix']}-{n}"
            future = await comm.task_send({"id": ident, "pad": pad}, no_reply=count is None)
            _say(f"sent {ident}")
            if future is None:
                continue
            if config.get("each"):
                _say(f"result {ident} {await future}")
            elif config.get("results"):
                futures.append((ident, future))
        for ident, future in futures:
            _say(f"result {ident} {await future}")
    except kiwipy.StorageError as exc:
        _say(f"error {exc}")
        sys.exit(3)
    _say("finished")
    await comm.disconnect()


async def _fill(config: dict[str, Any]) -> None:
    comm = await sqlite.async_connect(config["url"], **config.get("options", {}))
    _say("ready")
    pad = "x" * int(config["size"])
    for n in itertools.count():
        try:
            await comm.task_send({"id": f"f-{n}", "pad": pad}, no_reply=True)
        except Exception as exc:  # the parent checks that it is a StorageError
            _say(f"full {type(exc).__name__}: {exc}".replace("\n", " "))
            break
        _say(f"sent f-{n}")
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await comm.add_task_subscriber(_recorder(config["log"]))
    _say("draining")
    await asyncio.Event().wait()  # until stopped


ROLES = {"worker": _worker, "send": _send, "fill": _fill}

if __name__ == "__main__":
    # kiwipy's warnings and errors (a pump that could not read the file, a failed ack) go to
    # stderr, where the tests look for them
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(ROLES[sys.argv[1]](json.loads(sys.argv[2])))
