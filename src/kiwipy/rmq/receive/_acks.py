"""``basic.ack`` frames written together: one socket write for the acks that pile up while the
connection's writer is busy.

aiormq's ``basic_ack`` queues one frame for its writer task, which writes it (a ``send``
system call) and drains before the ack returns: a system call per consumed message, a
quarter of a busy consumer's time. :func:`ack` adds the same frame (each delivery is still
acknowledged on its own, never with ``multiple``) to the channel's item in the writer's
queue, which acks and publishes that follow join until the writer takes it
(:func:`kiwipy.rmq.connection._aiormq_boundary.join_frames`, the one module that reaches
into aiormq). The returned future resolves, as ``basic_ack`` returns, once that item was
drained to the socket.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import aiormq.abc

from ..connection import _aiormq_boundary as internals

__all__ = ("ack", "ack_frame")

#: method frame header (type 1, channel, size 13), Basic.Ack (60, 80), tag, bits, frame end
_ACK = struct.Struct(">BHIHHQB")
_END = b"\xce"


def ack_frame(channel_number: int, delivery_tag: int) -> bytes:
    """:returns: the ``basic.ack`` frame pamqp marshals (``multiple`` false)."""
    return _ACK.pack(1, channel_number, 13, 60, 80, delivery_tag, 0) + _END


def ack(channel: aiormq.abc.AbstractChannel, delivery_tag: int) -> asyncio.Future[None]:
    """Acknowledge *delivery_tag* on *channel* (see the module doc).

    :returns: a future resolved once the ack was handed to the socket (failed like
        ``basic_ack``'s when the channel or connection closes first).
    """
    ch: Any = channel
    if not internals.can_join(ch):
        # the writer is far behind: let aiormq wait
        waiting: asyncio.Future[None] = asyncio.ensure_future(ch.basic_ack(delivery_tag))
        return waiting
    drained = internals.join_frames(ch, ack_frame(ch.number, delivery_tag), drain=True)
    assert drained is not None
    return drained
