"""Confirmed publishing on an aiormq channel without a coroutine per message.

aiormq's ``basic_publish`` takes the channel lock, numbers the message, registers its
confirm future, marshals the frames with pamqp, queues them for the writer task, waits for
the writer to drain, then awaits the confirm: three suspensions and a pamqp marshal per
message. :func:`start` does the same bookkeeping synchronously, in one step, for any number
of messages:

* each message gets the next delivery tag, a confirm future made by the channel (so a
  channel or connection failure fails it, as aiormq fails its own), a ``message_id`` (a
  random uuid4 hex, as aiormq sets) mapped to the tag so a ``basic.return`` fails exactly
  that message's future with ``PublishError``; a ``basic.nack`` fails it with
  ``DeliveryError``, a ``basic.ack`` resolves it with the ack frame (all done by aiormq's
  own confirm handling);
* all their frames (:mod:`kiwipy.rmq._frames`, byte-identical to pamqp's) go to the
  connection's writer as one write.

It is used only when nothing else is in the middle of a publish on the channel (the channel
lock is free and the writer's queue has room); otherwise :func:`publish` falls back to
``basic_publish``. Both paths put the same bytes on the wire and end the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from random import getrandbits
from typing import Any, NamedTuple, Optional
from uuid import UUID

import aiormq.abc
from pamqp import commands as spec

from . import _aiormq_boundary as internals
from ._frames import publish_frames

__all__ = ("Outgoing", "can_start", "publish", "start")


class Outgoing(NamedTuple):
    """One message to publish."""

    exchange: str
    routing_key: str
    body: bytes
    properties: spec.Basic.Properties
    mandatory: bool


def can_start(channel: aiormq.abc.AbstractChannel) -> bool:
    """:returns: whether :func:`start` may publish on *channel* now."""
    return internals.can_write_directly(channel)


def start(
    channel: aiormq.abc.AbstractChannel,
    messages: Sequence[Outgoing],
    drain: bool = False,
) -> tuple[list[asyncio.Future[Any]], Optional[asyncio.Future[Any]]]:
    """Publish *messages* at once (call only when :func:`can_start` is true).

    :returns: their confirm futures (see the module doc), and with *drain* a future the
        writer resolves once the frames are handed to the socket.
    :raises ValueError: for a routing key over 255 bytes (nothing is published).
    """
    ch: Any = channel
    for message in messages:
        if len(message.routing_key) > 255:
            raise ValueError("Routing key too long (max 255 bytes)")
    frames: list[bytes] = []
    futures = [_register(ch, message, frames) for message in messages]
    drained = ch.create_future() if drain else None
    internals.write(ch, b"".join(frames), drained)
    return futures, drained


def _register(ch: Any, message: Outgoing, frames: list[bytes]) -> asyncio.Future[Any]:
    props = message.properties
    if not props.message_id:
        props.message_id = UUID(int=getrandbits(128), version=4).hex
    future = internals.register_confirm(ch, props.message_id)
    publish_frames(
        ch.number,
        message.exchange,
        message.routing_key,
        message.mandatory,
        props,
        message.body,
        internals.max_content_size(ch),
        frames,
    )
    return future


def publish(
    channel: aiormq.abc.AbstractChannel, message: Outgoing, timeout: Optional[float] = None
) -> Awaitable[Any]:
    """Publish one message, like ``channel.basic_publish``: when :func:`can_start`, it is
    written at once and the confirm future itself is returned (no task is needed to await
    it), else ``basic_publish``'s coroutine.

    The awaitable returns the confirm frame (``Basic.Ack``) and raises what
    ``basic_publish`` raises (``PublishError``, ``DeliveryError``, channel and connection
    errors, ``asyncio.TimeoutError`` after *timeout* seconds).
    """
    if can_start(channel):
        futures, _ = start(channel, (message,))
        if timeout is None:
            return futures[0]
        return asyncio.wait_for(futures[0], timeout)
    return channel.basic_publish(
        message.body,
        exchange=message.exchange,
        routing_key=message.routing_key,
        properties=message.properties,
        mandatory=message.mandatory,
        timeout=timeout,
    )
