"""The RPC side of :class:`kiwipy.rmq.messages.RmqSubscriber`: one exclusive queue per RPC
identifier, and the subscriber registered for it.

Invariants:

* Each identifier has the queue ``<exchange>.rpc.<identifier>``, declared exclusive: a
  second registration anywhere on the broker raises
  :class:`~kiwipy.DuplicateSubscriberIdentifier` (``RESOURCE_LOCKED``). It is bound to
  ``[rpc].<identifier>`` and to the routing key of the cancels of its requests
  (:mod:`kiwipy.rmq.receive._cancel`), and consumed without acknowledgement. Removing the subscriber
  deletes its queue (bug B13).
* Restoring is idempotent: only an identifier that is not consuming is started again. One
  another connection holds when we come back is tried again for a while, then its
  subscriber is removed (:mod:`kiwipy.rmq.receive._identities`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable
from typing import Any, Callable, NamedTuple

import aiormq.abc
import shortuuid
from aiormq import exceptions as amqp_errors

from ... import _limits, exceptions
from .. import _traced, protocol
from ..connection._session import Session
from ..protocol import rpc_queue_name
from . import _cancel
from ._handlers import MessageHandling
from ._identities import TakenIdentities

__all__ = ("RpcQueues",)

_LOGGER = logging.getLogger("kiwipy.rmq.messages")

#: ``bind(queue, routing_key)``: declare the message exchange and bind *queue* to it.
Bind = Callable[[str, str], Awaitable[None]]


class _Rpc(NamedTuple):
    subscriber: Any
    queue: str
    consumer_tag: str  # "" while it is being registered


class RpcQueues:
    """The RPC subscribers of one subscriber side, each with its queue.

    :param session: the session (channels of *purpose*).
    :param purpose: the session purpose the queues are consumed on.
    :param exchange_name: the message exchange.
    :param queue_arguments: the queues' declare arguments (TTL, expiry).
    :param bind: declares the exchange and binds a queue to it.
    :param handling: runs the subscriber of each request.
    """

    def __init__(
        self,
        session: Session,
        purpose: str,
        exchange_name: str,
        queue_arguments: dict[str, Any],
        bind: Bind,
        handling: MessageHandling,
    ) -> None:
        self._session = session
        self._purpose = purpose
        self._exchange_name = exchange_name
        self._queue_arguments = queue_arguments
        self._bind = bind
        self._handling = handling
        self._queues: dict[Any, _Rpc] = {}
        self._taken = TakenIdentities(session)

    async def add(self, subscriber: Any, identifier: Any = None) -> Any:
        """See :meth:`kiwipy.rmq.messages.RmqSubscriber.add_rpc_subscriber`."""
        identifier = shortuuid.uuid() if identifier is None else identifier
        _limits.rpc_identifier(identifier)
        if identifier in self._queues:
            raise exceptions.DuplicateSubscriberIdentifier(f"RPC identifier '{identifier}'")
        queue = rpc_queue_name(self._exchange_name, identifier)
        self._queues[identifier] = _Rpc(subscriber, queue, "")  # reserved while we declare
        try:
            tag = await self._start_rpc(identifier, queue)
        except BaseException:
            del self._queues[identifier]
            raise
        self._queues[identifier] = _Rpc(subscriber, queue, tag)
        return identifier

    async def _start_rpc(self, identifier: Any, queue: str) -> str:
        try:
            await self._session.call(
                "declaring an RPC queue",
                "queue_declare",
                queue=queue,
                exclusive=True,
                arguments=self._queue_arguments,
            )
        except amqp_errors.ChannelLockedResource as exc:
            raise exceptions.DuplicateSubscriberIdentifier(
                f"RPC identifier '{identifier}' is held by another communicator"
            ) from exc
        routing_key = protocol.rpc_routing_key(identifier)
        await self._bind(queue, routing_key)
        cancels = _cancel.routing_key(identifier)
        if cancels is not None:  # cancels of its requests (kiwipy 0.9 never binds this key)
            await self._bind(queue, cancels)
        callback = functools.partial(self._on_rpc, identifier)
        return await self._session.consume(self._purpose, queue, callback, no_ack=True)

    def _on_rpc(self, identifier: Any, message: aiormq.abc.DeliveredMessage) -> None:
        cancelled = _cancel.cancel_of(message)
        if cancelled is not None:
            self._handling.cancel(cancelled)
            return
        rpc = self._queues.get(identifier)  # None: removed while the request was on its way
        subscriber = None if rpc is None else rpc.subscriber
        handling = self._handling.rpc(identifier, subscriber, message)
        self._handling.spawn(_traced.delivery(handling, "rpc", message.routing_key or "", message))

    async def remove(self, identifier: Any) -> None:
        """See :meth:`kiwipy.rmq.messages.RmqSubscriber.remove_rpc_subscriber`."""
        try:
            rpc = self._queues.pop(identifier)
        except KeyError:
            raise ValueError(f"Unknown subscriber '{identifier}'") from None
        await self._session.cancel(self._purpose, rpc.consumer_tag)
        await self._delete(rpc.queue)

    async def _restore_one(self, identifier: Any) -> bool:
        """:returns: ``False`` if the identifier is held elsewhere, for now."""
        rpc = self._queues.get(identifier)
        if (
            rpc is None
            or not rpc.consumer_tag
            or self._session.is_consuming(self._purpose, rpc.consumer_tag)
        ):
            return True  # gone, being registered, or consuming
        try:
            tag = await self._start_rpc(identifier, rpc.queue)
        except exceptions.DuplicateSubscriberIdentifier as exc:
            if self._taken.keep_trying(identifier, exc):
                return False
            del self._queues[identifier]
            return True
        self._taken.regained(identifier)
        if self._queues.get(identifier) is rpc:
            self._queues[identifier] = rpc._replace(consumer_tag=tag)
        elif identifier not in self._queues:  # removed while we restored it
            await self._session.cancel(self._purpose, tag)
        return True

    async def _delete(self, queue: str) -> None:
        try:
            await self._session.call(f"deleting {queue!r}", "queue_delete", queue=queue)
        except (exceptions.KiwiError, amqp_errors.ChannelClosed) as exc:
            _LOGGER.debug("queue %s not deleted: %s", queue, exc)

    async def restore(self) -> list[Any]:
        """Start again the identifiers not consuming. :returns: those held elsewhere."""
        return [
            identifier
            for identifier in list(self._queues)
            if not await self._restore_one(identifier)
        ]

    async def stop(self) -> None:
        """Stop consuming (the queues are deleted by :meth:`close`)."""
        for rpc in self._queues.values():
            await self._session.cancel(self._purpose, rpc.consumer_tag)

    async def close(self) -> None:
        """Delete the queues and forget the subscribers (after :meth:`stop`)."""
        for rpc in self._queues.values():
            await self._delete(rpc.queue)
        self._queues.clear()
