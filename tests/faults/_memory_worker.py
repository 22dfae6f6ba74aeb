"""A worker process whose memory the tests measure: ``python _memory_worker.py '<json>'``.

Config keys: ``url`` and ``options`` (communicator options). Each task's result is its
length (tasks are lists); it prints ``ready`` once it consumes and runs until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from kiwipy import rmq


async def main(config: dict[str, Any]) -> None:
    comm = await rmq.async_connect(config["url"], **config["options"])
    await comm.add_task_subscriber(lambda _comm, task: len(task))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
