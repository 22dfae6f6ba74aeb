"""A worker process for the fault scenarios: ``python _worker_proc.py '<json config>'``.

Config keys: ``url``, ``options`` (communicator options), ``log`` (the completion log),
``mode`` (``"tasks"``, the default, or ``"rpc"``), ``rpc_id`` (for ``"rpc"``).

Tasks are dicts ``{"id": str, "sleep": float}``. For each one the worker appends
``start <id> <pid>`` when it begins and ``done <id> <pid>`` when it ends to the log, with one
``write`` on an ``O_APPEND`` file descriptor (atomic for such short lines, so several
processes can share the file), and returns the id. RPC requests are answered the same way.
It prints ``ready`` once it consumes, and runs until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from kiwipy import rmq


def _record(fd: int, event: str, ident: str) -> None:
    os.write(fd, f"{event} {ident} {os.getpid()}\n".encode())


async def main(config: dict[str, Any]) -> None:
    fd = os.open(config["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    comm = await rmq.async_connect(config["url"], **config["options"])

    async def work(_comm: Any, task: dict[str, Any]) -> str:
        _record(fd, "start", task["id"])
        await asyncio.sleep(float(task.get("sleep", 0)))
        _record(fd, "done", task["id"])
        return str(task["id"])

    if config.get("mode") == "rpc":
        await comm.add_rpc_subscriber(work, config["rpc_id"])
    else:
        await comm.add_task_subscriber(work)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
