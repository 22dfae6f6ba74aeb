"""Cancelling an RPC on a RabbitMQ responder (issue 16, :mod:`kiwipy._cancels`).

A cancel is an empty message to the routing key ``kiwipy-cancel.[rpc].<identifier>``
(:func:`routing_key`) on the message exchange, with the header :data:`HEADER` holding the
correlation id of the request to cancel. This library's responders bind their RPC queue to
that key as well; a kiwipy 0.9 responder never does, so a cancel never reaches one (it would
call its subscriber with the empty body): the broker drops it, unroutable (it is not
mandatory), and a 0.9 handler runs to its end, its reply dropped by the caller.

An identifier whose cancel key would be over AMQP's 255 bytes gets no cancel binding: its
requests cannot be cancelled remotely (the caller's future is cancelled all the same).
"""

from __future__ import annotations

from typing import Any, Optional

import aiormq.abc

from .._limits import MAX_SHORT_STRING
from . import _amqp, protocol
from ._fastpublish import Outgoing

__all__ = ("HEADER", "cancel_of", "message", "routing_key")

#: The header of a cancel, holding the correlation id of the request it cancels.
HEADER = "x-kiwipy-cancel"
_PREFIX = "kiwipy-cancel."


def routing_key(recipient_id: Any) -> Optional[str]:
    """:returns: the routing key of cancels to *recipient_id*, or ``None`` if it would be
    too long for AMQP."""
    key = _PREFIX + protocol.rpc_routing_key(recipient_id)
    return key if len(key.encode()) <= MAX_SHORT_STRING else None


def message(exchange: str, recipient_id: Any, correlation_id: str) -> Optional[Outgoing]:
    """:returns: the cancel of the request *correlation_id* to *recipient_id* (``None``:
    that identifier cannot be sent cancels, :func:`routing_key`)."""
    key = routing_key(recipient_id)
    if key is None:
        return None
    props = _amqp.properties(headers={HEADER: correlation_id})
    return Outgoing(exchange, key, b"", props, False)


def cancel_of(delivered: aiormq.abc.DeliveredMessage) -> Optional[str]:
    """:returns: the correlation id a received cancel cancels, or ``None`` if *delivered* is
    not a cancel (a request)."""
    if not (delivered.routing_key or "").startswith(_PREFIX):
        return None
    value = (delivered.header.properties.headers or {}).get(HEADER)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None
