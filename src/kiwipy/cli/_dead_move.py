"""``kiwipy dead requeue`` (``<queue>.dead`` to ``<queue>``) and ``park`` (``<queue>`` to
``<queue>.dead``, for migrating or setting aside a queue) on RabbitMQ.

Each chosen message is republished through the default exchange (``mandatory``, with a
publisher confirm) and the original acknowledged only once the broker has confirmed the copy:
a failure in between leaves two copies, never none. A copy keeps the body and the properties
that matter (``correlation_id``, ``reply_to``, ``message_id``), so its result still reaches a
sender that waits; its headers are :mod:`._dead_headers`'. Every message not moved goes back
at its place (:mod:`._dead_taken`).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Optional

from ._common import EXIT_OK, CliError, err, out
from ._dead_headers import dead_reason, parked_headers, requeued_headers
from ._dead_taken import Taken

__all__ = ("park", "requeue")


async def requeue(channel: Any, queue: str, args: argparse.Namespace) -> int:
    taken = Taken(channel, queue)
    done = await _move(taken, queue, args, requeued_headers, "requeued")
    err(f"kiwipy dead requeue: requeued {done} of {taken.total} dead-lettered task(s) to {queue!r}")
    return EXIT_OK


async def park(channel: Any, queue: str, args: argparse.Namespace) -> int:
    taken = Taken(channel, queue, source=queue)
    done = await _move(taken, taken.dead, args, lambda h: parked_headers(h, queue), "parked")
    err(f"kiwipy dead park: parked {done} of {taken.total} waiting task(s) in {taken.dead!r}")
    return EXIT_OK


async def _move(
    taken: Taken,
    target: str,
    args: argparse.Namespace,
    headers: Callable[[Optional[dict[str, Any]]], dict[str, Any]],
    verb: str,
) -> int:
    """Move the chosen messages of *taken* to the queue *target*, each confirmed by the broker
    before its original is acknowledged; every other message goes back at its place."""
    sent: set[int] = set()
    try:
        await taken.take(None if args.all or args.correlation_id else args.count)
        for message in _choose(taken.messages, args):
            await _republish(taken.channel, target, message, headers)
            sent.add(id(message))
            reason = dead_reason(message.header.properties.headers)[0]
            props = message.header.properties
            out(f"{verb} {props.correlation_id or props.message_id} ({reason}) to {target}")
    finally:
        await taken.give_back([m for m in taken.messages if id(m) not in sent])
    return len(sent)


def _choose(messages: list[Any], args: argparse.Namespace) -> list[Any]:
    if args.correlation_id is not None:
        chosen = [m for m in messages if m.header.properties.correlation_id == args.correlation_id]
        if not chosen:
            raise CliError(f"no task there has correlation id {args.correlation_id!r}")
        return chosen
    if args.all:
        return list(messages)
    return list(messages[: args.count])


async def _republish(
    channel: Any,
    target: str,
    message: Any,
    headers: Callable[[Optional[dict[str, Any]]], dict[str, Any]],
) -> None:
    from aiormq import exceptions as amqp_errors

    from ..rmq.leases._leases import copy_properties

    props = message.header.properties
    copy = copy_properties(props, headers(props.headers))
    try:
        await channel.basic_publish(
            message.body, exchange="", routing_key=target, properties=copy, mandatory=True
        )
    except amqp_errors.PublishError:
        raise CliError(f"queue {target!r} does not exist: nothing was moved to it") from None
    await channel.basic_ack(message.delivery_tag)
