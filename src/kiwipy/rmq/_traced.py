"""Where RabbitMQ messages meet :mod:`kiwipy._tracing`: the trace context headers of an
outgoing message (:func:`headers`, called by each builder of :mod:`kiwipy.rmq.send._outgoing`),
and the consumer span around the handling of a delivery (:func:`delivery`, called where the
task, RPC and broadcast consumers hand a delivery to their subscribers).

Both cost one check of :data:`kiwipy._tracing.ENABLED` without OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Optional, TypeVar

import aiormq.abc

from .. import _tracing
from .receive import _outcome

__all__ = ("delivery", "headers", "outcome")

T = TypeVar("T")


def headers(
    kind: str, destination: str, correlation_id: Optional[str], body: bytes
) -> Optional[dict[str, Any]]:
    """:returns: the AMQP headers carrying the trace context of a message about to be sent
    (``None`` without OpenTelemetry); records its PRODUCER span."""
    if not _tracing.ENABLED:
        return None
    return _tracing.produce(_tracing.RABBITMQ, kind, destination, correlation_id, body)


def delivery(
    handling: Awaitable[T], kind: str, destination: str, message: aiormq.abc.DeliveredMessage
) -> Awaitable[T]:
    """:returns: *handling* (the coroutine handing *message* to the subscribers), run in the
    CONSUMER span that continues the sender's trace (*handling* itself without
    OpenTelemetry)."""
    if not _tracing.ENABLED:
        return handling
    props = message.header.properties
    return _tracing.process(
        handling,
        _tracing.RABBITMQ,
        kind,
        destination,
        props.headers,
        props.correlation_id,
        message.body,
        props.message_id,
        bool(getattr(message.delivery, "redelivered", False)),
    )


def outcome(result: Optional[_outcome.Outcome]) -> None:
    """The subscribers ended with *result* (``None``: every one rejected the message): an
    exception sets the consumer span's status to ERROR, a rejection is an event on it."""
    if not _tracing.ENABLED:
        return
    if result is None or result.kind == _outcome.REJECTED:
        _tracing.rejected(None if result is None else result.value)
    elif result.kind == _outcome.EXCEPTION:
        _tracing.failed(result.value)
