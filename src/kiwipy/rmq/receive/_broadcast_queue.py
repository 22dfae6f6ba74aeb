"""The broadcast side of :class:`kiwipy.rmq.messages.RmqSubscriber`: its broadcast queue,
the broadcast subscribers, and the fence of the broadcast tally.

Invariants:

* One exclusive ``broadcast-<shortuuid>`` queue, bound to ``[broadcast]`` on the message
  exchange, consumed (without acknowledgement) while at least one broadcast subscriber is
  registered. It stays bound while none is, so broadcasts sent meanwhile arrive on
  re-subscription (within the queue's TTL), as in kiwipy 0.9.
* Each broadcast is counted on the tally as its delivery arrives and finished once every
  subscriber was called (:mod:`kiwipy._broadcasts`); the tally's fence is set while the
  queue is consumed.
* Restoring is idempotent: the queue is consumed again (under a new name, so a dead
  connection's queue cannot block it) only if it has subscribers and is not consuming.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Callable, Optional

import aiormq.abc
import shortuuid

from ... import _broadcasts, exceptions
from .. import _traced, defaults
from ..connection import _amqp
from ..connection._session import Session
from ._handlers import MessageHandling

__all__ = ("BroadcastQueue",)

#: ``bind(queue, routing_key)``: declare the message exchange and bind *queue* to it.
Bind = Callable[[str, str], Awaitable[None]]


class BroadcastQueue:
    """The broadcast subscribers of one subscriber side and the queue they are fed from.

    :param session: the session (channels of *purpose*).
    :param purpose: the session purpose the queue is consumed on.
    :param queue_arguments: the queue's declare arguments (TTL, expiry).
    :param bind: declares the exchange and binds a queue to it.
    :param handling: runs the subscribers of each broadcast.
    :param tally: counts the broadcast handlers.
    """

    def __init__(
        self,
        session: Session,
        purpose: str,
        queue_arguments: dict[str, Any],
        bind: Bind,
        handling: MessageHandling,
        tally: _broadcasts.Tally,
    ) -> None:
        self._session = session
        self._purpose = purpose
        self._queue_arguments = queue_arguments
        self._bind = bind
        self._handling = handling
        self.tally = tally
        self._subscribers: dict[Any, Any] = {}
        self._hand_over = False  # whether every subscriber takes broadcasts from any thread
        self.queue = f"broadcast-{shortuuid.uuid()}"
        self._tag: Optional[str] = None

    async def add(self, subscriber: Any, identifier: Any = None) -> Any:
        """See :meth:`kiwipy.rmq.messages.RmqSubscriber.add_broadcast_subscriber`."""
        identifier = identifier or shortuuid.uuid()
        if identifier in self._subscribers:
            raise exceptions.DuplicateSubscriberIdentifier(f"Broadcast identifier '{identifier}'")
        self._subscribers[identifier] = subscriber
        self._hand_over = _broadcasts.can_hand_over(self._subscribers.values())
        if self._tag is None:
            try:
                await self._start()
            except BaseException:
                del self._subscribers[identifier]
                self._hand_over = _broadcasts.can_hand_over(self._subscribers.values())
                raise
        return identifier

    async def _start(self) -> None:
        # Declared each time consumption starts: it may have expired while unused.
        await self._session.call(
            "declaring the broadcast queue",
            "queue_declare",
            queue=self.queue,
            exclusive=True,
            arguments=self._queue_arguments,
        )
        await self._bind(self.queue, defaults.BROADCAST_TOPIC)
        self._tag = await self._session.consume(
            self._purpose, self.queue, self._on_broadcast, no_ack=True
        )
        self.tally.fence = self._fence

    async def remove(self, identifier: Any) -> None:
        """:raises ValueError: for an unknown identifier."""
        try:
            del self._subscribers[identifier]
        except KeyError:
            raise ValueError(f"Broadcast subscriber '{identifier}' unknown") from None
        self._hand_over = _broadcasts.can_hand_over(self._subscribers.values())
        if not self._subscribers and self._tag is not None:
            tag, self._tag = self._tag, None
            self.tally.fence = None
            await self._session.cancel(self._purpose, tag)

    async def _fence(self) -> None:
        """The tally's fence: return once every broadcast the broker had delivered to this
        side has arrived and been counted. A send's confirm comes on the publish channel and
        may overtake the delivery of the broadcast to our queue; a passive declare on the
        channel consuming that queue is answered after the deliveries made before it."""
        if not self._session.is_consuming(self._purpose, self._tag):
            return
        channel = await self._session.channel(self._purpose)
        await _amqp.guarded(channel, channel.queue_declare(self.queue, passive=True))

    def _on_broadcast(self, message: aiormq.abc.DeliveredMessage) -> None:
        # Counted here, as the delivery arrives: aiormq schedules this call while it handles
        # the delivery frame, so it runs before whatever a later frame (the fence's answer)
        # wakes up, and a handler spawned but not yet running counts (kiwipy._thread).
        subscribers = list(self._subscribers.values())
        if self._hand_over and self._handling.hand_over(subscribers, message, self.tally):
            return  # on the subscribers' workers already (kiwipy._broadcasts)
        self.tally.started()
        handling = self._handling.broadcast(subscribers, message)
        handler = self._handling.spawn(
            _traced.delivery(handling, "broadcast", message.exchange or "", message)
        )
        handler.add_done_callback(self.tally.finished)

    async def restore(self) -> None:
        """Consume again, on a new queue, if there are subscribers and it is not consuming."""
        if self._subscribers and not self._session.is_consuming(self._purpose, self._tag):
            self.queue = f"broadcast-{shortuuid.uuid()}"
            await self._start()

    async def stop(self) -> None:
        """Stop consuming."""
        if self._tag is not None:
            await self._session.cancel(self._purpose, self._tag)

    def close(self) -> None:
        """Forget the subscribers and the consumer (after :meth:`stop`)."""
        self._subscribers.clear()
        self._hand_over = False
        self._tag = None
        self.tally.fence = None
