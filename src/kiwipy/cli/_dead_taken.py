"""Taking the messages of a RabbitMQ queue for ``kiwipy dead`` without losing any.

Every message is taken with ``basic.get`` *without* acknowledgement (none can be lost if this
process dies: the broker gives unacknowledged messages back when the connection closes), and
each one not moved is given back with ``basic.nack(requeue=True)``. RabbitMQ puts a message
given back at its original place, so the queue keeps its order; only the ``redelivered`` flag
of the messages is set. The number of messages is read first (passive declare), so a message
arriving while the command runs is left alone, never read twice.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, Callable, Optional

from ._common import CliError, open_broker

__all__ = ("Taken", "connected")


class Taken:
    """The messages taken (unacknowledged) from one queue: ``<queue>.dead``, or the task
    queue itself for ``park``."""

    def __init__(self, channel: Any, queue: str, source: Optional[str] = None) -> None:
        self.channel = channel
        self.queue = queue
        self.dead = queue + ".dead"
        self.source = source or self.dead
        self.total = 0
        self.messages: list[Any] = []

    async def take(self, limit: Optional[int]) -> None:
        from aiormq import exceptions as amqp_errors
        from pamqp import commands as spec

        try:
            ok = await self.channel.queue_declare(self.source, passive=True)
        except amqp_errors.ChannelNotFoundEntity:
            raise CliError(
                f"queue {self.source!r} does not exist (is {self.queue!r} a task queue?)"
            ) from None
        self.total = int(ok.message_count or 0)
        wanted = self.total if limit is None else min(self.total, limit)
        while len(self.messages) < wanted:
            message = await self.channel.basic_get(self.source, no_ack=False)
            if not isinstance(message.delivery, spec.Basic.GetOk):
                break
            self.messages.append(message)

    async def give_back(self, messages: Sequence[Any]) -> None:
        """Return *messages* to the queue, at their places."""
        for message in messages:
            await self.channel.basic_nack(message.delivery_tag, requeue=True)


async def connected(args: argparse.Namespace, work: Callable[[Any], Any]) -> int:
    try:
        import aiormq
    except ImportError:
        raise CliError("dead needs aiormq: pip install 'kiwipy[rmq]'") from None
    connection = await open_broker(args.url, aiormq.connect(args.url))
    try:
        channel = await connection.channel(publisher_confirms=True)
        code: int = await work(channel)
        return code
    finally:
        await connection.close()
