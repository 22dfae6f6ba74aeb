"""Frames written together: one item in a connection writer's queue that later frames of the
same channel join until the writer takes it.

aiormq's writer takes one item at a time from a queue of ten and makes a ``send`` system call
for each. A consumer's acks and the confirmed publishes of many concurrent senders (an
asyncio ``gather`` of ``task_send`` calls, several threads sending at once) would each cost
an item, a system call and a pass of the writer; and once ten are queued, the next publish
would have to wait in ``basic_publish`` (with its per-message coroutines, pamqp marshalling
and the channel's lock). :func:`add` puts a :class:`Joined` item in the writer's queue at
once, so it keeps its place before anything queued after it (a ``channel.close`` in
particular); frames added while the writer has not taken it yet go out with it, in one write,
earlier than they would have alone.

That order is always allowed for acks. For publishes it is allowed as long as no publish of
the channel is queued behind the open item (the broker numbers publishes in the order it
reads them, and each confirm future was registered under the next number when its frames
were added): :func:`kiwipy.rmq.send._fastpublish.publish` calls :func:`seal` before it
leaves a message to ``basic_publish``.

The open item of each channel is found through a table that holds channels weakly, and an
item holds its channel weakly too: a channel whose connection died before its writer took the
item is freed with that connection (issue 11).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Optional

import aiormq.abc

from . import _aiormq_boundary as internals

__all__ = ("Joined", "add", "is_open", "seal")


class Joined:
    """What aiormq's writer takes from its queue (it reads ``payload``, ``should_close``,
    ``should_drain`` and calls ``drain()``, as on a ``ChannelFrame``)."""

    should_close = False

    def __init__(self, channel: Any) -> None:
        self._channel = weakref.ref(channel)
        self.number: int = channel.number
        self.frames: list[bytes] = []
        self.drained: Optional[asyncio.Future[None]] = None

    @property
    def payload(self) -> bytes:
        self.seal()  # taken by the writer: later frames need an item of their own
        return b"".join(self.frames)

    def seal(self) -> None:
        """Let no more frames join this item."""
        channel = self._channel()
        if channel is not None and _OPEN.get(channel) is self:
            del _OPEN[channel]

    @property
    def should_drain(self) -> bool:
        return self.drained is not None and not self.drained.done()

    def drain(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def __repr__(self) -> str:
        return f"<frames of channel {self.number}: {len(self.frames)}>"


#: The item of each channel still waiting in its writer's queue (loop thread only).
_OPEN: weakref.WeakKeyDictionary[Any, Joined] = weakref.WeakKeyDictionary()


def is_open(channel: aiormq.abc.AbstractChannel) -> bool:
    """:returns: whether *channel* has an item in its writer's queue that frames may join."""
    return channel in _OPEN


def add(
    channel: aiormq.abc.AbstractChannel, frames: bytes, drain: bool = False
) -> Optional[asyncio.Future[None]]:
    """Queue *frames* (whole frames of *channel*) in the open item, or in a new one (call only
    when :func:`is_open` or the writer's queue has room).

    :returns: with *drain*, a future resolved once the writer handed them to the socket
        (failed, as ``basic_ack``'s, when the channel or connection closes first).
    """
    ch: Any = channel
    item = _OPEN.get(ch)
    if item is None:
        item = _OPEN[ch] = Joined(ch)
        internals.enqueue(ch, item)
    item.frames.append(frames)
    if drain and item.drained is None:
        item.drained = ch.create_future()
    return item.drained if drain else None


def seal(channel: aiormq.abc.AbstractChannel) -> None:
    """Let no more frames join the item of *channel* now in the writer's queue."""
    item = _OPEN.get(channel)
    if item is not None:
        item.seal()
