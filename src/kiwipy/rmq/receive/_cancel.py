"""Cancelling an RPC on a RabbitMQ responder, and a task before a worker starts it (issue
16, :mod:`kiwipy._cancels`).

A cancel is an empty message to the routing key ``kiwipy-cancel.[rpc].<identifier>``
(:func:`routing_key`) on the message exchange, with the header :data:`HEADER` holding the
correlation id of the request to cancel. This library's responders bind their RPC queue to
that key as well; a kiwipy 0.9 responder never does, so a cancel never reaches one (it would
call its subscriber with the empty body): the broker drops it, unroutable (it is not
mandatory), and a 0.9 handler runs to its end, its reply dropped by the caller.

An identifier whose cancel key would be over AMQP's 255 bytes gets no cancel binding: its
requests cannot be cancelled remotely (the caller's future is cancelled all the same).

A task whose future its sender cancelled is announced the same way, on the task exchange
with the routing key ``kiwipy-cancel.<queue>`` (:func:`task_notice`). Each worker of that
queue (:class:`TaskCancels`) hears it on an exclusive queue of its own and remembers the last
:data:`REMEMBERED` cancelled correlation ids; a task found cancelled when it arrives is
acknowledged unstarted. Limits: a worker that was not connected when the notice went out
does not hear it (nor does a kiwipy 0.9 worker), and a task already started runs to its
end (its outcome is dropped by the sender).
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Optional

import aiormq.abc

from ..._limits import MAX_SHORT_STRING
from .. import protocol
from ..connection import _amqp
from ..connection._session import TOPOLOGY, Session
from ..send._fastpublish import Outgoing

__all__ = ("HEADER", "REMEMBERED", "TaskCancels", "cancel_of", "message", "routing_key")

_LOGGER = logging.getLogger(__name__)

#: How many cancelled tasks a worker remembers (the oldest is forgotten first).
REMEMBERED = 10_000

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


def _task_key(queue: str) -> Optional[str]:
    key = _PREFIX + queue
    return key if len(key.encode()) <= MAX_SHORT_STRING else None


def task_notice(exchange: str, queue: str, correlation_id: str) -> Optional[Outgoing]:
    """:returns: the notice that the task *correlation_id* of *queue* was cancelled
    (``None``: the queue's name is too long for a notice key)."""
    key = _task_key(queue)
    if key is None:
        return None
    props = _amqp.properties(headers={HEADER: correlation_id})
    return Outgoing(exchange, key, b"", props, False)


class TaskCancels:
    """The cancelled tasks of one queue that one worker heard of (module doc).

    :param session: the worker's session.
    :param purpose: the channel purpose to consume the notices on.
    :param exchange: the task exchange.
    :param queue: the task queue.
    """

    def __init__(self, session: Session, purpose: str, exchange: str, queue: str) -> None:
        self._session = session
        self._purpose = purpose
        self._exchange = exchange
        self._key = _task_key(queue)
        self._tag: Optional[str] = None
        self._cancelled: collections.OrderedDict[str, None] = collections.OrderedDict()

    async def listen(self) -> None:
        """Hear the notices, on an exclusive queue of this connection (again after a
        reconnection: the queue went with the old connection)."""
        if self._key is None or self._session.is_consuming(self._purpose, self._tag):
            return
        declared = await self._session.call(
            "declaring a task-cancel queue",
            "queue_declare",
            queue="",
            exclusive=True,
            auto_delete=True,
        )
        name = declared.queue
        await self._session.call(
            "binding a task-cancel queue",
            "queue_bind",
            purpose=TOPOLOGY,
            queue=name,
            exchange=self._exchange,
            routing_key=self._key,
        )
        self._tag = await self._session.consume(self._purpose, name, self._on_notice, no_ack=True)

    async def _on_notice(self, delivered: aiormq.abc.DeliveredMessage) -> None:
        value = (delivered.header.properties.headers or {}).get(HEADER)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str):
            return
        self._cancelled[value] = None
        while len(self._cancelled) > REMEMBERED:
            self._cancelled.popitem(last=False)

    def cancelled(self, correlation_id: Optional[str]) -> bool:
        """:returns: whether the task *correlation_id* was cancelled by its sender."""
        return correlation_id is not None and correlation_id in self._cancelled
