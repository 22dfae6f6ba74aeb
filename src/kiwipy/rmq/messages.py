"""RPCs and broadcasts on the message exchange: :class:`RmqPublisher` and :class:`RmqSubscriber`.

Topology (kiwipy 0.9 names and routing keys, so 0.9 peers interoperate):

* RPCs go to ``[rpc].<identifier>`` on the message exchange. Each RPC subscriber gets an
  **exclusive** queue with a deterministic name, ``<exchange>.rpc.<identifier>`` (kiwipy 0.9
  let aio-pika pick a random one). RabbitMQ refuses a second exclusive declare of that name
  from any other connection (``RESOURCE_LOCKED``), which makes identifiers unique across the
  broker: the second registration raises :class:`~kiwipy.DuplicateSubscriberIdentifier`
  instead of two subscribers answering one call. Removing the subscriber deletes its queue
  (bug B13).
* Broadcasts go to ``[broadcast]``; each subscriber side has one exclusive
  ``broadcast-<shortuuid>`` queue with kiwipy 0.9's 66 s message TTL, plus ``x-expires`` so a
  queue nobody consumes any more cannot collect messages forever (B13). It stays bound while
  no broadcast subscriber is registered, so broadcasts sent meanwhile arrive on
  re-subscription (within the TTL), as in kiwipy 0.9.
* RPC requests are consumed without acknowledgement (kiwipy 0.9 acknowledged them before
  running the subscriber: the same guarantee, one frame less); broadcasts likewise. They are
  handled by :mod:`kiwipy.rmq._handlers`.
* RPC requests and broadcasts are sent once (``retry=False``): a send whose connection broke
  under it raises :class:`~kiwipy.ConnectionLost` rather than risking running an RPC twice.
  Replies are awaited with a watch on the subscriber's queue (:mod:`kiwipy.rmq._liveness`).
* Restoring (after a reconnection, or when the broker cancelled a consumer) is idempotent: only
  what is not consuming is started again. An RPC identifier another connection holds when we
  come back is tried again for a while, then its subscriber is removed
  (:mod:`kiwipy.rmq._identities`): never two subscribers for one identifier. The broadcast
  queue gets a new name on each restore, so a dead connection's queue cannot block it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable
from typing import Any, NamedTuple, Optional

import aiormq.abc
import shortuuid
from aiormq import exceptions as amqp_errors

from .. import _broadcasts, _deadlines, _limits, exceptions
from . import _amqp, _batch, _cancel, _offload, _outgoing, _traced, defaults, protocol
from ._handlers import MessageHandling
from ._identities import TakenIdentities
from ._recovery import RestoreLater
from ._replies import ReplyQueue
from ._session import Session
from .protocol import rpc_queue_name

__all__ = (
    "BaseConnectionWithExchange",
    "BasePublisherWithReplyQueue",
    "BroadcastMessage",
    "RmqPublisher",
    "RmqSubscriber",
    "rpc_queue_name",
)

_LOGGER = logging.getLogger(__name__)

MESSAGES = "messages"
#: Seconds ``disconnect`` waits for RPCs and broadcasts already received to be handled.
_DRAIN_GRACE = 1.0
#: RabbitMQ may delete a queue with a tiny ``x-expires`` between its declare and its consume.
_MIN_EXPIRES = 1000


class BroadcastMessage:
    """kiwipy 0.9's broadcast body keys and builder."""

    BODY = "body"
    SENDER = "sender"
    SUBJECT = "subject"
    CORRELATION_ID = "correlation_id"

    @staticmethod
    def create(
        body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> dict[str, Any]:
        """:returns: the broadcast body dict."""
        message = protocol.Broadcast(body, sender, subject, correlation_id)
        return protocol.encode_broadcast(message)


def _codec_options(encoder: Any, decoder: Any, testing_mode: bool) -> dict[str, Any]:
    return {"encoder": encoder, "decoder": decoder, "testing_mode": testing_mode}


class BaseConnectionWithExchange:
    """kiwipy 0.9's base class of its task subscriber, kept so that ``isinstance`` and
    ``issubclass`` checks written against 0.9 still hold: :class:`~kiwipy.rmq.RmqTaskSubscriber`
    derives from it. It has no behaviour of its own."""


class BasePublisherWithReplyQueue:
    """kiwipy 0.9's base class of its publishers, kept for ``isinstance`` and ``issubclass``
    checks written against 0.9: :class:`RmqPublisher` and :class:`~kiwipy.rmq.RmqTaskPublisher`
    derive from it. It has no behaviour of its own."""


class RmqPublisher(BasePublisherWithReplyQueue):
    """Sends RPCs and broadcasts, and receives the RPC replies.

    :param connection: an aio-pika connection (or a communicator's internal session).
    :param exchange_name: the message exchange.
    :param exchange_params: aio-pika ``declare_exchange`` keywords overriding kiwipy 0.9's.
    :param encoder: see :class:`~kiwipy.rmq.RmqCommunicator`.
    :param decoder: see :class:`~kiwipy.rmq.RmqCommunicator`.
    :param confirm_deliveries: accepted for compatibility; every send is confirmed.
    :param testing_mode: auto-deleting exchange.
    :param replies: the reply queue to use (a communicator shares one), else its own.
    """

    def __init__(
        self,
        connection: Any,
        exchange_name: str = defaults.MESSAGE_EXCHANGE,
        exchange_params: Optional[dict[str, Any]] = None,
        encoder: Any = defaults.ENCODER,
        decoder: Any = defaults.DECODER,
        confirm_deliveries: bool = True,
        testing_mode: bool = False,
        *,
        replies: Optional[ReplyQueue] = None,
    ) -> None:
        self._session = Session.of(connection, _codec_options(encoder, decoder, testing_mode))
        self._owns_session = self._session is not connection
        self._exchange_name = exchange_name
        self._exchange_params = _amqp.exchange_arguments(
            exchange_params, self._session.testing_mode
        )
        self._replies = replies or ReplyQueue(self._session, exchange_name)
        self._content_type = self._session.encoder.content_type
        self._cancelling: set[asyncio.Future[Any]] = set()  # cancels being sent

    def get_exchange_name(self) -> str:
        return self._exchange_name

    def target(self) -> _outgoing.MessageTarget:
        """Where this publisher's messages go, for ``rpc_send_many``,
        ``broadcast_send_many`` and the thread facade's quick sends, which send them as
        :meth:`rpc_send` and :meth:`broadcast_send` do."""
        return _outgoing.MessageTarget(
            self._session, self._exchange_name, self._replies, self._content_type
        )

    async def connect(self) -> None:
        """Declare the exchange and start receiving replies (binding the reply queue to it
        keeps a testing-mode exchange alive while this publisher lives)."""
        await self._replies.bind(self._exchange_name, self._exchange_params)

    async def disconnect(self) -> None:
        """Stop receiving replies; waiting futures fail with
        :class:`~kiwipy.CommunicatorClosed`."""
        self._replies.fail_all(exceptions.CommunicatorClosed())
        await self._replies.close()
        if self._owns_session:
            await self._session.close()

    async def rpc_send(
        self, recipient_id: Any, msg: Any, *, timeout: Optional[float] = None
    ) -> asyncio.Future[Any]:
        """Send *msg* to the RPC subscriber *recipient_id*.

        :param timeout: seconds the reply may take: then the future fails with
            :class:`~kiwipy.DeadlineExceeded`, and the request is not started any more
            (:mod:`kiwipy._deadlines`). ``None``: no deadline.
        :returns: once the broker confirmed the request, a future for the reply.
        :raises UnroutableError: if nobody holds *recipient_id*.
        :raises InvalidName: if *recipient_id* breaks the naming rules (:mod:`kiwipy._limits`).
        :raises MessageTooLarge: if *msg* encodes to more than ``max_message_size``.
        """
        timeout = _deadlines.check_timeout(timeout)
        _limits.rpc_identifier(recipient_id)  # before the work of encoding
        # large messages are encoded off the loop, as tasks are (issue 11)
        body = await _offload.encode(self._session, msg)
        message, correlation_id, watch = _outgoing.rpc(self.target(), recipient_id, body, timeout)
        _LOGGER.debug("Sending RPC %s to %r: %r", correlation_id, message.routing_key, msg)
        future = self._replies.expect(correlation_id, message.routing_key, watch)
        # armed now, when the deadline in the message was computed
        self._replies.deadline(correlation_id, future, timeout)
        try:
            await self._session.publish(*message, retry=False)
        except BaseException:
            self._replies.forget(correlation_id)
            future.cancel()  # nobody has it: no timer may fail it unseen
            raise
        on_done = functools.partial(self._on_rpc_done, recipient_id, correlation_id)
        future.add_done_callback(on_done)
        return future

    def _on_rpc_done(
        self, recipient_id: Any, correlation_id: str, future: asyncio.Future[Any]
    ) -> None:
        """A caller that cancelled its RPC cancels the handler too (:mod:`._cancel`)."""
        if not future.cancelled():
            return
        self._replies.forget(correlation_id)  # no reply comes for a cancelled handler
        cancel = _cancel.message(self._exchange_name, recipient_id, correlation_id)
        if cancel is not None:
            sending = asyncio.ensure_future(self._session.publish(*cancel, retry=False))
            self._cancelling.add(sending)
            sending.add_done_callback(self._cancel_sent)

    def _cancel_sent(self, sending: asyncio.Future[Any]) -> None:
        self._cancelling.discard(sending)
        if not sending.cancelled() and sending.exception() is not None:
            _LOGGER.warning("an RPC cancel was not sent: %s", sending.exception())

    async def rpc_send_many(
        self,
        calls: Iterable[tuple[Any, Any]],
        *,
        timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> list[asyncio.Future[Any]]:
        """Send the ``(recipient_id, msg)`` *calls* with many publishes in flight, each as
        :meth:`rpc_send` sends it; see :mod:`kiwipy.rmq._batch`.

        :returns: once every request is confirmed, the reply future of each call.
        :raises BatchSendError: if any call failed (nobody holds its recipient, or the batch
            stopped).
        """
        call_timeout = _deadlines.check_timeout(call_timeout)
        return await _batch.send_rpcs(self.target(), calls, timeout, call_timeout)

    async def broadcast_send(
        self, msg: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> Any:
        """Send a broadcast (not an error when nobody listens).

        :returns: the broker's confirm (``pamqp.commands.Basic.Ack``), as kiwipy 0.9 did.
        """
        message = BroadcastMessage.create(msg, sender, subject, correlation_id)
        _LOGGER.debug("Sending broadcast on %r: %r", self._exchange_name, message)
        body = await _offload.encode(self._session, message)
        return await self._session.publish(*_outgoing.broadcast(self.target(), body), retry=False)

    async def broadcast_send_many(
        self, broadcasts: Iterable[tuple[Any, ...]], *, timeout: Optional[float] = None
    ) -> None:
        """Send *broadcasts* (tuples of :meth:`broadcast_send`'s positional arguments) with
        many publishes in flight, each as :meth:`broadcast_send` sends it; see
        :mod:`kiwipy.rmq._batch`. Returns once every broadcast is confirmed.

        :raises BatchSendError: if any broadcast was not confirmed (the batch stopped).
        """
        await _batch.send_broadcasts(self.target(), broadcasts, timeout)


class _Rpc(NamedTuple):
    subscriber: Any
    queue: str
    consumer_tag: str  # "" while it is being registered


class RmqSubscriber:
    """Receives RPCs and broadcasts.

    Subscribers are called with ``owner`` (the communicator) as first argument.

    :param connection: an aio-pika connection (or a communicator's internal session).
    :param message_exchange: the message exchange.
    :param queue_expires: ms an unused RPC or broadcast queue lives on (falsy: forever).
    :param owner: first argument of every subscriber call (default: this object).
    :param tally: counts the broadcast handlers (the thread facade's barrier; default: a
        tally of its own, see :meth:`broadcast_tally`).
    """

    def __init__(
        self,
        connection: Any,
        message_exchange: str = defaults.MESSAGE_EXCHANGE,
        queue_expires: int = defaults.QUEUE_EXPIRES,
        decoder: Any = defaults.DECODER,
        encoder: Any = defaults.ENCODER,
        testing_mode: bool = False,
        *,
        owner: Any = None,
        tally: Optional[_broadcasts.Tally] = None,
    ) -> None:
        self._session = Session.of(connection, _codec_options(encoder, decoder, testing_mode))
        self._owns_session = self._session is not connection
        self._exchange_name = message_exchange
        self._exchange_params = _amqp.exchange_arguments(None, self._session.testing_mode)
        self._owner = self if owner is None else owner
        self._queue_arguments: dict[str, Any] = {"x-message-ttl": defaults.MESSAGE_TTL}
        if queue_expires:
            self._queue_arguments["x-expires"] = max(int(queue_expires), _MIN_EXPIRES)
        self._rpc: dict[Any, _Rpc] = {}
        self._broadcast: dict[Any, Any] = {}
        self._broadcast_queue = f"broadcast-{shortuuid.uuid()}"
        self._broadcast_tag: Optional[str] = None
        self._handling = MessageHandling(self._session, message_exchange, self._owner)
        self._tally = _broadcasts.Tally() if tally is None else tally
        self._taken = TakenIdentities(self._session)

    async def connect(self) -> None:
        """Get ready; the exchange and queues are declared as subscribers are added (an
        auto-deleting exchange that never had a binding would never be deleted)."""
        self._session.add_restorer(MESSAGES, self, self._restore)

    # RPC

    async def add_rpc_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        """Receive RPCs sent to *identifier* (a short uuid if ``None``).

        :returns: the identifier.
        :raises DuplicateSubscriberIdentifier: if it is taken, here or anywhere on the broker.
        :raises InvalidName: if it breaks the naming rules (:mod:`kiwipy._limits`).
        """
        identifier = shortuuid.uuid() if identifier is None else identifier
        _limits.rpc_identifier(identifier)
        if identifier in self._rpc:
            raise exceptions.DuplicateSubscriberIdentifier(f"RPC identifier '{identifier}'")
        queue = rpc_queue_name(self._exchange_name, identifier)
        self._rpc[identifier] = _Rpc(subscriber, queue, "")  # reserved while we declare
        try:
            tag = await self._start_rpc(identifier, queue)
        except BaseException:
            del self._rpc[identifier]
            raise
        self._rpc[identifier] = _Rpc(subscriber, queue, tag)
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
        return await self._session.consume(MESSAGES, queue, callback, no_ack=True)

    def _on_rpc(self, identifier: Any, message: aiormq.abc.DeliveredMessage) -> None:
        cancelled = _cancel.cancel_of(message)
        if cancelled is not None:
            self._handling.cancel(cancelled)
            return
        rpc = self._rpc.get(identifier)  # None: removed while the request was on its way
        subscriber = None if rpc is None else rpc.subscriber
        handling = self._handling.rpc(identifier, subscriber, message)
        self._handling.spawn(_traced.delivery(handling, "rpc", message.routing_key or "", message))

    async def _bind(self, queue: str, routing_key: str) -> None:
        # Declared again first: in testing mode the exchange auto-deletes when its last
        # binding goes, e.g. when another communicator on it closed a moment ago.
        await self._session.declare_exchange(self._exchange_name, self._exchange_params)
        await self._session.call(
            f"binding {queue!r}",
            "queue_bind",
            queue=queue,
            exchange=self._exchange_name,
            routing_key=routing_key,
        )

    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        """Stop receiving RPCs for *identifier* and delete its queue.

        :raises ValueError: for an unknown identifier.
        """
        try:
            rpc = self._rpc.pop(identifier)
        except KeyError:
            raise ValueError(f"Unknown subscriber '{identifier}'") from None
        await self._session.cancel(MESSAGES, rpc.consumer_tag)
        await self._delete(rpc.queue)

    async def _delete(self, queue: str) -> None:
        try:
            await self._session.call(f"deleting {queue!r}", "queue_delete", queue=queue)
        except (exceptions.KiwiError, amqp_errors.ChannelClosed) as exc:
            _LOGGER.debug("queue %s not deleted: %s", queue, exc)

    # Broadcasts

    async def add_broadcast_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        """Receive every broadcast. :returns: the identifier (a short uuid if ``None``).

        :raises DuplicateSubscriberIdentifier: if this subscriber side already has it.
        """
        identifier = identifier or shortuuid.uuid()
        if identifier in self._broadcast:
            raise exceptions.DuplicateSubscriberIdentifier(f"Broadcast identifier '{identifier}'")
        self._broadcast[identifier] = subscriber
        if self._broadcast_tag is None:
            try:
                await self._start_broadcasts()
            except BaseException:
                del self._broadcast[identifier]
                raise
        return identifier

    async def _start_broadcasts(self) -> None:
        # Declared each time consumption starts: it may have expired while unused.
        await self._session.call(
            "declaring the broadcast queue",
            "queue_declare",
            queue=self._broadcast_queue,
            exclusive=True,
            arguments=self._queue_arguments,
        )
        await self._bind(self._broadcast_queue, defaults.BROADCAST_TOPIC)
        self._broadcast_tag = await self._session.consume(
            MESSAGES, self._broadcast_queue, self._on_broadcast, no_ack=True
        )
        self._tally.fence = self._broadcast_fence

    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        """:raises ValueError: for an unknown identifier."""
        try:
            del self._broadcast[identifier]
        except KeyError:
            raise ValueError(f"Broadcast subscriber '{identifier}' unknown") from None
        if not self._broadcast and self._broadcast_tag is not None:
            tag, self._broadcast_tag = self._broadcast_tag, None
            self._tally.fence = None
            await self._session.cancel(MESSAGES, tag)

    def broadcast_tally(self) -> _broadcasts.Tally:
        """:returns: the count of broadcast handlers started and finished."""
        return self._tally

    async def _broadcast_fence(self) -> None:
        """The tally's fence: return once every broadcast the broker had delivered to this
        side has arrived and been counted. A send's confirm comes on the publish channel and
        may overtake the delivery of the broadcast to our queue; a passive declare on the
        channel consuming that queue is answered after the deliveries made before it."""
        if not self._session.is_consuming(MESSAGES, self._broadcast_tag):
            return
        channel = await self._session.channel(MESSAGES)
        await _amqp.guarded(channel, channel.queue_declare(self._broadcast_queue, passive=True))

    def _on_broadcast(self, message: aiormq.abc.DeliveredMessage) -> None:
        # Counted here, as the delivery arrives: aiormq schedules this call while it handles
        # the delivery frame, so it runs before whatever a later frame (the fence's answer)
        # wakes up, and a handler spawned but not yet running counts (kiwipy._thread).
        subscribers = list(self._broadcast.values())
        self._tally.started()
        handling = self._handling.broadcast(subscribers, message)
        handler = self._handling.spawn(
            _traced.delivery(handling, "broadcast", message.exchange or "", message)
        )
        handler.add_done_callback(self._tally.finished)

    # Life cycle

    async def _restore(self) -> None:
        """Start again what is not consuming (module doc); idempotent."""
        taken = [
            identifier for identifier in list(self._rpc) if not await self._restore_rpc(identifier)
        ]
        if self._broadcast and not self._session.is_consuming(MESSAGES, self._broadcast_tag):
            self._broadcast_queue = f"broadcast-{shortuuid.uuid()}"
            await self._start_broadcasts()
        if taken:
            raise RestoreLater(f"RPC identifiers {taken!r} are held by another connection")

    async def _restore_rpc(self, identifier: Any) -> bool:
        """:returns: ``False`` if the identifier is held elsewhere, for now."""
        rpc = self._rpc.get(identifier)
        if (
            rpc is None
            or not rpc.consumer_tag
            or self._session.is_consuming(MESSAGES, rpc.consumer_tag)
        ):
            return True  # gone, being registered, or consuming
        try:
            tag = await self._start_rpc(identifier, rpc.queue)
        except exceptions.DuplicateSubscriberIdentifier as exc:
            if self._taken.keep_trying(identifier, exc):
                return False
            del self._rpc[identifier]
            return True
        self._taken.regained(identifier)
        if self._rpc.get(identifier) is rpc:
            self._rpc[identifier] = rpc._replace(consumer_tag=tag)
        elif identifier not in self._rpc:  # removed while we restored it
            await self._session.cancel(MESSAGES, tag)
        return True

    async def disconnect(self) -> None:
        """Stop consuming, let what was already received be handled (briefly), and delete
        this side's queues."""
        self._session.remove_restorer(MESSAGES, self)
        for rpc in self._rpc.values():
            await self._session.cancel(MESSAGES, rpc.consumer_tag)
        if self._broadcast_tag is not None:
            await self._session.cancel(MESSAGES, self._broadcast_tag)
        await self._handling.drain(_DRAIN_GRACE)
        for rpc in self._rpc.values():
            await self._delete(rpc.queue)
        self._rpc.clear()
        self._broadcast.clear()
        self._broadcast_tag = None
        self._tally.fence = None
        if self._owns_session:
            await self._session.close()
