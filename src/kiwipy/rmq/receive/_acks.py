"""``basic.ack`` frames written together: one socket write for the acks that pile up while the
connection's writer is busy.

aiormq's ``basic_ack`` queues one frame for its writer task, which writes it (a ``send``
system call) and drains before the ack returns: a system call per consumed message, a
quarter of a busy consumer's time. :func:`ack` queues the same frame (each delivery is still
acknowledged on its own, never with ``multiple``) in an :class:`_AckBatch` placed in the
writer's queue at once, so it keeps its place before anything queued after it (a
``channel.close`` in particular). Acks that follow, while the writer has not taken that
batch yet, join it: they go out with it, in one write, earlier than they would have alone,
which is always allowed for an ack. The returned future resolves, as ``basic_ack`` returns,
once the batch was drained to the socket.

The batch still open on each channel is found through a table that holds channels weakly,
and a batch holds its channel weakly too: a channel whose connection died before its
writer took the batch is freed with that connection (issue 11).
"""

from __future__ import annotations

import asyncio
import struct
import weakref
from typing import Any, Optional

import aiormq.abc

from ..connection import _aiormq_boundary as internals

__all__ = ("ack", "ack_frame")

#: method frame header (type 1, channel, size 13), Basic.Ack (60, 80), tag, bits, frame end
_ACK = struct.Struct(">BHIHHQB")
_END = b"\xce"


def ack_frame(channel_number: int, delivery_tag: int) -> bytes:
    """:returns: the ``basic.ack`` frame pamqp marshals (``multiple`` false)."""
    return _ACK.pack(1, channel_number, 13, 60, 80, delivery_tag, 0) + _END


class _AckBatch:
    """What aiormq's writer takes from its queue (it reads ``payload``, ``should_close``,
    ``should_drain`` and calls ``drain()``, as on a ``ChannelFrame``)."""

    should_close = False

    def __init__(self, channel: Any) -> None:
        self._channel = weakref.ref(channel)
        self.number: int = channel.number
        self.frames: list[bytes] = []
        self.drain_future: asyncio.Future[None] = channel.create_future()
        self.sealed = False

    @property
    def payload(self) -> bytes:
        self.sealed = True  # taken by the writer: later acks need a batch of their own
        channel = self._channel()
        if channel is not None and _OPEN.get(channel) is self:
            del _OPEN[channel]
        return b"".join(self.frames)

    @property
    def should_drain(self) -> bool:
        return not self.drain_future.done()

    def drain(self) -> None:
        if not self.drain_future.done():
            self.drain_future.set_result(None)

    def __repr__(self) -> str:
        return f"<acks of channel {self.number}: {len(self.frames)}>"


#: The batch of each channel still waiting in its writer's queue (loop thread only).
_OPEN: weakref.WeakKeyDictionary[Any, _AckBatch] = weakref.WeakKeyDictionary()


def ack(channel: aiormq.abc.AbstractChannel, delivery_tag: int) -> asyncio.Future[None]:
    """Acknowledge *delivery_tag* on *channel* (see the module doc).

    :returns: a future resolved once the ack was handed to the socket (failed like
        ``basic_ack``'s when the channel or connection closes first).
    """
    ch: Any = channel
    batch: Optional[_AckBatch] = _OPEN.get(ch)
    if batch is None or batch.sealed:
        if internals.write_queue_full(ch):  # the writer is far behind: let aiormq wait
            waiting: asyncio.Future[None] = asyncio.ensure_future(ch.basic_ack(delivery_tag))
            return waiting
        batch = _OPEN[ch] = _AckBatch(ch)
        internals.enqueue(ch, batch)
    batch.frames.append(ack_frame(ch.number, delivery_tag))
    return batch.drain_future
