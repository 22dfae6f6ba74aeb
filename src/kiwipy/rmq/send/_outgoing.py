"""What each send puts on the wire, built in one place.

A task, an RPC request and a broadcast are sent by the core (``task_send``, ``rpc_send``,
``broadcast_send``), by the thread facade's quick lane (:mod:`kiwipy.rmq.send._lane`) and by
batches (:mod:`kiwipy.rmq.send._batch`). All of them build their messages here, so the three
ways cannot drift apart: kiwipy 0.9's exchanges and routing keys, tasks persistent and
mandatory, RPC requests transient and mandatory, broadcasts transient and not mandatory,
each request with a fresh correlation id and the reply queue, each message with its trace
context headers when OpenTelemetry is installed (:mod:`kiwipy.rmq._traced`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from ... import _deadlines, exceptions
from .. import _traced, defaults, protocol
from ..connection import _amqp
from ..connection._session import Session
from ..receive._replies import ReplyQueue
from . import _offload
from ._fastpublish import Outgoing

__all__ = ("MessageTarget", "TaskTarget", "broadcast", "encode", "rpc", "task")


class TaskTarget(NamedTuple):
    """Where the tasks of a publisher go (what ``RmqTaskPublisher.task_send`` uses)."""

    session: Session
    exchange: str
    queue: str
    replies: ReplyQueue
    content_type: Optional[str]


class MessageTarget(NamedTuple):
    """Where a publisher's RPCs and broadcasts go (what ``RmqPublisher`` uses)."""

    session: Session
    exchange: str
    replies: ReplyQueue
    content_type: Optional[str]


def encode(session: Session, obj: Any) -> bytes:
    """:returns: *obj* encoded with the session's encoder (any thread).

    :raises EncodeError: if it cannot be encoded.
    :raises MessageTooLarge: if it is over ``max_message_size``.
    """
    _offload.refuse_oversized(session, obj)
    body = session.encoder.encode(obj)
    if len(body) > session.max_message_size:
        raise exceptions.MessageTooLarge(len(body), session.max_message_size)
    return body


def task(target: TaskTarget, body: bytes, timeout: Optional[float] = None) -> tuple[Outgoing, str]:
    """:returns: the task message carrying *body*, and its correlation id (its reply is
    awaited as ``replies.expect(correlation_id, target.queue)``); with a *timeout*, it
    carries its deadline (:func:`_deadline`)."""
    correlation_id = _amqp.new_correlation_id()
    headers = _traced.headers("task", target.queue, correlation_id, body)
    headers, expiration = _deadline(headers, timeout)
    props = _amqp.properties(
        persistent=True,
        correlation_id=correlation_id,
        reply_to=target.replies.name,
        content_type=target.content_type,
        headers=headers,
        expiration=expiration,
    )
    return Outgoing(target.exchange, target.queue, body, props, True), correlation_id


def rpc(
    target: MessageTarget, recipient_id: Any, body: bytes, timeout: Optional[float] = None
) -> tuple[Outgoing, str, str]:
    """:returns: the request to *recipient_id* carrying *body*, its correlation id, and the
    queue that tells whether the recipient is alive (the reply is awaited as
    ``replies.expect(correlation_id, message.routing_key, watch)``); with a *timeout*, it
    carries its deadline (:func:`_deadline`)."""
    routing_key = protocol.rpc_routing_key(recipient_id)
    correlation_id = _amqp.new_correlation_id()
    headers = _traced.headers("rpc", routing_key, correlation_id, body)
    headers, expiration = _deadline(headers, timeout)
    props = _amqp.properties(
        correlation_id=correlation_id,
        reply_to=target.replies.name,
        content_type=target.content_type,
        headers=headers,
        expiration=expiration,
    )
    watch = protocol.rpc_queue_name(target.exchange, recipient_id)
    return Outgoing(target.exchange, routing_key, body, props, True), correlation_id, watch


def _deadline(
    headers: Optional[dict[str, Any]], timeout: Optional[float]
) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """:returns: *headers* and the AMQP expiration of a request given *timeout* seconds:
    unchanged and ``None`` without one (a request without a deadline is sent byte for byte
    as before); else the absolute deadline added as a header, for the receiver to check on
    arrival (a message may wait in a prefetch buffer after the broker let it go), and the
    expiration the broker honours, kiwipy 0.9 peers too (:mod:`kiwipy._deadlines`)."""
    if timeout is None:
        return headers, None
    with_deadline = dict(headers or {})
    with_deadline[_deadlines.HEADER] = _deadlines.header_value(_deadlines.absolute(timeout))
    return with_deadline, _deadlines.expiration(timeout)


def broadcast(target: MessageTarget, body: bytes) -> Outgoing:
    """:returns: the broadcast carrying *body* (an encoded envelope)."""
    headers = _traced.headers("broadcast", target.exchange, None, body)
    props = _amqp.properties(content_type=target.content_type, headers=headers)
    return Outgoing(target.exchange, defaults.BROADCAST_TOPIC, body, props, False)
