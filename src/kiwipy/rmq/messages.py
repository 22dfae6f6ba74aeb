"""RPCs and broadcasts on the message exchange: :class:`RmqPublisher` and :class:`RmqSubscriber`.

Topology (kiwipy 0.9 names and routing keys, so 0.9 peers interoperate):

* RPCs go to ``[rpc].<identifier>`` on the message exchange. Each RPC subscriber gets an
  **exclusive** queue with a deterministic name, ``<exchange>.rpc.<identifier>`` (kiwipy 0.9
  let aio-pika pick a random one). RabbitMQ refuses a second exclusive declare of that name
  from any other connection (``RESOURCE_LOCKED``), which makes identifiers unique across the
  broker: the second registration raises :class:`~kiwipy.DuplicateSubscriberIdentifier`
  instead of two subscribers answering one call. Removing the subscriber deletes its queue
  (bug B13). The RPC side of :class:`RmqSubscriber` is :mod:`kiwipy.rmq.receive._rpc_queues`.
* Broadcasts go to ``[broadcast]``; each subscriber side has one exclusive
  ``broadcast-<shortuuid>`` queue with kiwipy 0.9's 66 s message TTL, plus ``x-expires`` so a
  queue nobody consumes any more cannot collect messages forever (B13). It stays bound while
  no broadcast subscriber is registered, so broadcasts sent meanwhile arrive on
  re-subscription (within the TTL), as in kiwipy 0.9. The broadcast side of
  :class:`RmqSubscriber` is :mod:`kiwipy.rmq.receive._broadcast_queue`.
* RPC requests are consumed without acknowledgement (kiwipy 0.9 acknowledged them before
  running the subscriber: the same guarantee, one frame less); broadcasts likewise. They are
  handled by :mod:`kiwipy.rmq.receive._handlers`.
* RPC requests and broadcasts are sent once (``retry=False``): a send whose connection broke
  under it raises :class:`~kiwipy.ConnectionLost` rather than risking running an RPC twice.
  Replies are awaited with a watch on the subscriber's queue (:mod:`kiwipy.rmq.receive._liveness`).
* Restoring (after a reconnection, or when the broker cancelled a consumer) is idempotent: only
  what is not consuming is started again. An RPC identifier another connection holds when we
  come back is tried again for a while, then its subscriber is removed
  (:mod:`kiwipy.rmq.receive._identities`): never two subscribers for one identifier. The broadcast
  queue gets a new name on each restore, so a dead connection's queue cannot block it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable
from typing import Any, Optional

from .. import _broadcasts, _deadlines, _limits, exceptions
from . import defaults, protocol
from .connection import _amqp
from .connection._recovery import RestoreLater
from .connection._session import Session, codec_options
from .protocol import rpc_queue_name
from .receive import _cancel
from .receive._broadcast_queue import BroadcastQueue
from .receive._handlers import MessageHandling
from .receive._replies import ReplyQueue
from .receive._rpc_queues import RpcQueues
from .send import _batch, _offload, _outgoing

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
        self._session = Session.of(connection, codec_options(encoder, decoder, testing_mode))
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
        """A caller that cancelled its RPC cancels the handler too (:mod:`kiwipy.rmq.receive._cancel`)."""
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
        :meth:`rpc_send` sends it; see :mod:`kiwipy.rmq.send._batch`.

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
        :mod:`kiwipy.rmq.send._batch`. Returns once every broadcast is confirmed.

        :raises BatchSendError: if any broadcast was not confirmed (the batch stopped).
        """
        await _batch.send_broadcasts(self.target(), broadcasts, timeout)


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
        self._session = Session.of(connection, codec_options(encoder, decoder, testing_mode))
        self._owns_session = self._session is not connection
        self._exchange_name = message_exchange
        self._exchange_params = _amqp.exchange_arguments(None, self._session.testing_mode)
        self._owner = self if owner is None else owner
        self._queue_arguments: dict[str, Any] = {"x-message-ttl": defaults.MESSAGE_TTL}
        if queue_expires:
            self._queue_arguments["x-expires"] = max(int(queue_expires), _MIN_EXPIRES)
        self._handling = MessageHandling(self._session, message_exchange, self._owner)
        self._rpc = RpcQueues(
            self._session,
            MESSAGES,
            message_exchange,
            self._queue_arguments,
            self._bind,
            self._handling,
        )
        self._broadcasts = BroadcastQueue(
            self._session,
            MESSAGES,
            self._queue_arguments,
            self._bind,
            self._handling,
            _broadcasts.Tally() if tally is None else tally,
        )

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
        return await self._rpc.add(subscriber, identifier)

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
        await self._rpc.remove(identifier)

    # Broadcasts

    async def add_broadcast_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        """Receive every broadcast. :returns: the identifier (a short uuid if ``None``).

        :raises DuplicateSubscriberIdentifier: if this subscriber side already has it.
        """
        return await self._broadcasts.add(subscriber, identifier)

    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        """:raises ValueError: for an unknown identifier."""
        await self._broadcasts.remove(identifier)

    def broadcast_tally(self) -> _broadcasts.Tally:
        """:returns: the count of broadcast handlers started and finished."""
        return self._broadcasts.tally

    # Life cycle

    async def _restore(self) -> None:
        """Start again what is not consuming (module doc); idempotent."""
        taken = await self._rpc.restore()
        await self._broadcasts.restore()
        if taken:
            raise RestoreLater(f"RPC identifiers {taken!r} are held by another connection")

    async def disconnect(self) -> None:
        """Stop consuming, let what was already received be handled (briefly), and delete
        this side's queues."""
        self._session.remove_restorer(MESSAGES, self)
        await self._rpc.stop()
        await self._broadcasts.stop()
        await self._handling.drain(_DRAIN_GRACE)
        await self._rpc.close()
        self._broadcasts.close()
        if self._owns_session:
            await self._session.close()
