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
* all their frames (:mod:`kiwipy.rmq.send._frames`, byte-identical to pamqp's) go to the
  connection's writer as one write, joining those of other publishes (and acks) of the
  channel that the writer has not taken yet (``join_frames`` of the aiormq boundary): many
  concurrent sends cost one write, not one each.

It is used only when nothing else is in the middle of a publish on the channel (the channel
lock is free) and the frames can join an item still in the writer's queue, or the queue has
room for a new one; otherwise :func:`publish` falls back to ``basic_publish``. Both paths put the same bytes on the wire and end the same way.

A message whose frames cannot be built (a routing key, exchange name or property over
AMQP's 255-byte short strings, text that is not UTF-8) raises :class:`~kiwipy.InvalidName`
(or :class:`~kiwipy.EncodeError`) *before* anything is numbered or registered: a delivery
tag taken for a message that is never written would put every later confirm one step off
the broker's, and every later send on the channel would wait for a confirm that never
comes (issue 11). aiormq's ``basic_publish`` numbers first, so :func:`publish` builds the
frames once before falling back to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from random import getrandbits
from typing import Any, NamedTuple, Optional
from uuid import UUID

import aiormq.abc
from pamqp import commands as spec

from ... import _limits, exceptions
from ..connection import _aiormq_boundary as internals
from ._frames import SHORT_STRING_PROPERTIES, publish_frames

__all__ = ("Outgoing", "can_start", "publish", "start")


class Outgoing(NamedTuple):
    """One message to publish."""

    exchange: str
    routing_key: str
    body: bytes
    properties: spec.Basic.Properties
    mandatory: bool


def can_start(channel: aiormq.abc.AbstractChannel) -> bool:
    """:returns: whether :func:`start` may publish on *channel* now: nothing is half-way in
    ``basic_publish`` there, and the frames can join the channel's item still in the writer's
    queue, or the queue has room for a new one."""
    if not internals.can_write_directly(channel):
        return False
    return internals.can_join(channel)


def start(
    channel: aiormq.abc.AbstractChannel,
    messages: Sequence[Outgoing],
    drain: bool = False,
) -> tuple[list[asyncio.Future[Any]], Optional[asyncio.Future[Any]]]:
    """Publish *messages* at once (call only when :func:`can_start` is true).

    :returns: their confirm futures (see the module doc), and with *drain* a future the
        writer resolves once the frames are handed to the socket.
    :raises InvalidName: for a message whose frames cannot be built (nothing is published,
        nothing registered: see the module doc).
    """
    ch: Any = channel
    frames: list[bytes] = []
    for message in messages:  # every frame first: registering cannot be undone
        _marshal(ch.number, message, internals.max_content_size(ch), frames)
    futures = [_register(ch, message) for message in messages]
    drained = internals.join_frames(ch, b"".join(frames), drain)
    return futures, drained


def _marshal(number: int, message: Outgoing, max_content_size: int, frames: list[bytes]) -> None:
    """Append *message*'s frames to *frames* (giving it a ``message_id`` first, as aiormq
    does). :raises InvalidName: (or ``EncodeError``) if they cannot be built."""
    props = message.properties
    if not props.message_id:
        props.message_id = UUID(int=getrandbits(128), version=4).hex
    try:
        publish_frames(
            number,
            message.exchange,
            message.routing_key,
            message.mandatory,
            props,
            message.body,
            max_content_size,
            frames,
        )
    except Exception as exc:
        raise _unmarshallable(message, exc) from exc


def _unmarshallable(message: Outgoing, exc: Exception) -> exceptions.KiwiError:
    """:returns: the error saying which part of *message* is not a valid short string."""
    props = message.properties
    parts = [("exchange name", message.exchange), ("routing key", message.routing_key)]
    parts += [(f"{name} property", getattr(props, name)) for name in SHORT_STRING_PROPERTIES]
    parts += [("header name", key) for key in props.headers or ()]
    for field, value in parts:
        if value is not None:
            try:
                _limits.check_short_string(value, field)
            except exceptions.InvalidName as error:
                return error
    return exceptions.EncodeError(f"its AMQP frames cannot be built: {exc!r}", encoder="amqp")


def _register(ch: Any, message: Outgoing) -> asyncio.Future[Any]:
    message_id = message.properties.message_id
    assert message_id is not None  # given by _marshal
    return internals.register_confirm(ch, message_id)


def publish(
    channel: aiormq.abc.AbstractChannel, message: Outgoing, timeout: Optional[float] = None
) -> Awaitable[Any]:
    """Publish one message, like ``channel.basic_publish``: when :func:`can_start`, it is
    written at once and the confirm future itself is returned (no task is needed to await
    it), else ``basic_publish``'s coroutine.

    The awaitable returns the confirm frame (``Basic.Ack``) and raises what
    ``basic_publish`` raises (``PublishError``, ``DeliveryError``, channel and connection
    errors, ``asyncio.TimeoutError`` after *timeout* seconds).

    :raises InvalidName: at once, for a message whose frames cannot be built.
    """
    if can_start(channel):
        futures, _ = start(channel, (message,))
        if timeout is None:
            return futures[0]
        return asyncio.wait_for(futures[0], timeout)
    _marshal(0, message._replace(body=b""), 1, [])  # basic_publish numbers before it marshals
    internals.seal_frames(channel)  # no publish numbered later may be written before this one
    return channel.basic_publish(
        message.body,
        exchange=message.exchange,
        routing_key=message.routing_key,
        properties=message.properties,
        mandatory=message.mandatory,
        timeout=timeout,
    )
