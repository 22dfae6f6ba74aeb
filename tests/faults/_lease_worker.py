"""A task worker in a process of its own, for lease tests that SIGKILL it.

Usage: ``python -m tests.faults._lease_worker URL OPTIONS_JSON LOG``. Each task is a dict
``{"id": ..., "seconds": ...}``: the worker appends ``start <id> <pid> <time>`` to LOG, sleeps,
appends ``end ...`` and returns ``{"id": ..., "pid": ...}``. Library log records of
``kiwipy`` (INFO and up) go to LOG as ``log <time> <message>``, and ``ready <pid> <time>``
is written once it consumes. Every line is flushed at once: the process may be killed any time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

from kiwipy import rmq


def record(path: str, *fields: object) -> None:
    with open(path, "a") as log:
        log.write(" ".join(str(field) for field in fields) + "\n")
        log.flush()
        os.fsync(log.fileno())


class _ToFile(logging.Handler):
    def __init__(self, path: str) -> None:
        super().__init__(logging.INFO)
        self.path = path

    def emit(self, entry: logging.LogRecord) -> None:
        record(self.path, "log", time.time(), entry.getMessage().replace("\n", " "))


async def main(url: str, options: dict[str, Any], path: str) -> None:
    logger = logging.getLogger("kiwipy")
    logger.setLevel(logging.INFO)
    logger.addHandler(_ToFile(path))
    communicator = await rmq.async_connect(url, **options)

    async def run(_communicator: Any, task: dict[str, Any]) -> dict[str, Any]:
        record(path, "start", task["id"], os.getpid(), time.time())
        await asyncio.sleep(task["seconds"])
        record(path, "end", task["id"], os.getpid(), time.time())
        return {"id": task["id"], "pid": os.getpid()}

    await communicator.add_task_subscriber(run)
    record(path, "ready", os.getpid(), time.time())
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]))
