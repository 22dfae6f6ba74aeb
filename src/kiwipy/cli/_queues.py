"""The task queues ``kiwipy inspect`` and its ``--watch`` look at, and one queue's state
read with a passive declare (shared by :mod:`kiwipy.cli._inspect` and
:mod:`kiwipy.cli._watch`, so that neither imports the other's module for it)."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import DEFAULT_QUEUE

__all__ = ("DEAD_SUFFIX", "queue_state", "queues_to_inspect")

#: The suffix of the dead-letter queue kiwipy parks a task queue's failed tasks in.
DEAD_SUFFIX = ".dead"


def queues_to_inspect(args: argparse.Namespace) -> list[str]:
    """:returns: the queues named with ``--queue`` (default the default task queue), each
    followed by its ``.dead`` dead-letter queue."""
    names: list[str] = []
    for name in args.queue or [DEFAULT_QUEUE]:
        for candidate in (name, name + DEAD_SUFFIX):
            if name.endswith(DEAD_SUFFIX) and candidate != name:
                continue
            if candidate not in names:
                names.append(candidate)
    return names


async def queue_state(connection: Any, name: str) -> dict[str, Any]:
    """:returns: queue *name*'s ready messages and consumers, from a passive declare."""
    import aiormq

    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return {"name": name, "exists": False, "messages": None, "consumers": None}
    finally:
        if not channel.is_closed:
            await channel.close()
    result = queue.declaration_result
    return {
        "name": name,
        "exists": True,
        "messages": result.message_count,
        "consumers": result.consumer_count,
    }
