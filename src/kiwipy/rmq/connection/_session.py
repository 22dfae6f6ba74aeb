"""One aio-pika connection seen as a few AMQP channels, each with one purpose.

Invariants:

* Channels are aiormq channels opened on the aio-pika connection's transport, one per
  purpose (``topology`` for declares, ``publish`` for every send, one per consumer group),
  kept by :class:`kiwipy.rmq.connection._channels.Channels`. A closed channel is reopened on next use;
  nothing is declared per message. Calls that may close their channel (``probe``: passive
  declares, claims) get a fresh channel each.
* Every publish waits for the broker's confirm and returns only then; a send never reports
  success for a message the broker did not take. A send made during an outage waits for the
  connection to be back *and restored*; every send ends within ``recovery_timeout`` seconds,
  confirmed or with a typed error (:class:`~kiwipy.ConnectionLost` when the outcome is
  unknown). With ``retry`` (the default: tasks, replies, parking), a send whose channel or
  connection broke under it is sent again after the reconnection, and a nacked one again on
  fresh channels with backoff until ``recovery_timeout`` (a quorum queue electing a leader
  nacks every publish on a channel opened meanwhile; :mod:`kiwipy.rmq.send._publishing`): the
  receiver may get it twice, never zero times. RPC requests and
  broadcasts are not repeated (``retry=False``): they raise instead.
* The session keeps no topology of its own: components register restorers
  (:mod:`kiwipy.rmq.connection._recovery`). After aio-pika reconnects every purpose is restored, then
  the session is *ready* again and waiting sends go. A consumer cancelled by the broker
  (``basic.cancel``, e.g. its queue was deleted) or a consumer channel closed by it gets its
  purpose restored, with the connection alive.
* Connection state changes are reported once each (:mod:`kiwipy.rmq.connection._events`):
  ``connected``, ``disconnected`` (once per outage, not per failed attempt), ``stalled``
  (:mod:`kiwipy.rmq.connection._watchdog`), ``reconnected``, ``lost`` (not back within
  ``recovery_timeout``, or a connection that cannot reconnect), ``consumer-cancelled``,
  ``restore-failed``, ``subscriber-lost`` and ``closed``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

import aiormq
import aiormq.abc
from aiormq import exceptions as amqp_errors
from pamqp import commands as spec

from ... import encoders, exceptions
from .._options import RmqOptions, resolve_encoder, resolve_options
from ..send import _fastpublish
from ..send._publishing import PublishAttempt
from . import _aiormq_boundary, _amqp, _connecting, _events
from ._channels import PROBE, PUBLISH, TOPOLOGY, Channels
from ._recovery import Recovery, Restorer
from ._watchdog import Watchdog

__all__ = ("PROBE", "PUBLISH", "TOPOLOGY", "Session", "codec_options")

Listener = _events.Listener


def codec_options(encoder: Any, decoder: Any, testing_mode: bool) -> dict[str, Any]:
    """:returns: the options a task publisher, subscriber or queue made over a bare aio-pika
    connection gives its own session (:meth:`Session.of`)."""
    return {"encoder": encoder, "decoder": decoder, "testing_mode": testing_mode}


class Session:
    """Channels, confirmed publishing and restoration over one aio-pika connection.

    :param connection: an aio-pika connection (robust or not), connected or not.
    :param options: the resolved communicator options.
    :param owns_connection: close the connection with the session (and watch it for stalls).
    """

    def __init__(self, connection: Any, options: RmqOptions, owns_connection: bool = False) -> None:
        self.connection = connection
        self.options = options
        self.encoder: encoders.Encoder = resolve_encoder(options)
        self.max_message_size = options["max_message_size"]
        self.events = _events.Events(lambda: f"connection to {self.connection}")
        self._owns_connection = owns_connection
        self._closed = False
        self._closing = False
        self._decoding: Optional[asyncio.Lock] = None
        self._watchdog = Watchdog(self)
        self._recovery = Recovery(self)
        self._restoration = self._recovery.restoration
        self._ready = self._recovery.ready
        self.channels = Channels(self, self._restoration, self._ready)

    @classmethod
    def of(cls, connection: Any, options: dict[str, Any]) -> Session:
        """:returns: *connection* if it already is a session (components of a communicator
        share its session), else a new session over the aio-pika *connection*."""
        if isinstance(connection, Session):
            return connection
        return cls(connection, resolve_options(options))

    # State

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return _aiormq_boundary.event_loop(self.connection)

    @property
    def decoding(self) -> asyncio.Lock:
        """Held while a large body is decoded: one at a time, so their memory never adds up
        (made on first use, on the loop)."""
        if self._decoding is None:
            self._decoding = asyncio.Lock()
        return self._decoding

    @property
    def testing_mode(self) -> bool:
        return bool(self.options["testing_mode"])

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def is_connected(self) -> bool:
        """Whether the connection is up right now (aio-pika's ``is_closed`` is not: it stays
        false while a robust connection is away)."""
        return self.live_connection() is not None

    def live_connection(self) -> Optional[aiormq.abc.AbstractConnection]:
        """:returns: the aiormq connection if it is up, else ``None``."""
        transport = self.connection.transport
        if transport is None or transport.connection.is_closed:
            return None
        return transport.connection  # type: ignore[no-any-return]

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on every connection state change (see module doc)."""
        self.events.add(listener)

    def report(self, name: str, detail: str = "") -> None:
        """Report the event *name* (see :mod:`kiwipy.rmq.connection._events`) to listeners and the log."""
        self.events.emit(name, detail)

    async def start(self) -> None:
        """Connect the connection if needed, report ``'connected'`` and start the stall
        watchdog of a connection this session owns.

        :raises ConnectFailed: if the connection cannot be opened.
        """
        if self._closed:
            raise exceptions.CommunicatorClosed
        if self.connection.transport is None and not self.connection.is_closed:
            url = str(getattr(self.connection, "url", "")) or None
            await _connecting.opening(url, self.connection.connect())
        self.report(_events.CONNECTED)
        if self._owns_connection:
            self._watchdog.start()

    @property
    def can_reconnect(self) -> bool:
        """Whether waiting for the connection can help (it reconnects, and nobody closed it)."""
        closing = self._closed or self._closing
        return self._recovery.robust and not closing and not self.connection.is_closed

    async def wait_connected(self) -> aiormq.abc.AbstractConnection:
        """:returns: the live aiormq connection, waiting up to ``recovery_timeout`` for it.

        :raises CommunicatorClosed: once the session is closed.
        :raises ConnectionLost: if the connection is gone and does not come back in time.
        """
        return await self._recovery.wait_connected()

    # Channels (:mod:`kiwipy.rmq.connection._channels`)

    async def channel(self, purpose: str) -> aiormq.abc.AbstractChannel:
        """:returns: the open channel for *purpose*, opening it (again) if needed."""
        return await self.channels.channel(purpose)

    def set_prefetch(self, purpose: str, prefetch_size: int, prefetch_count: int) -> None:
        """See :meth:`kiwipy.rmq.connection._channels.Channels.set_prefetch`."""
        self.channels.set_prefetch(purpose, prefetch_size, prefetch_count)

    # Topology (on the topology channel, whose failures do not disturb consumers)

    async def call(self, what: str, method: str, *, purpose: str = TOPOLOGY, **kwargs: Any) -> Any:
        """Run the aiormq channel method *method* on the *purpose* channel; with
        :data:`PROBE`, on a channel opened for this call alone.

        :raises aiormq.exceptions.ChannelClosed: subclasses, for the caller to interpret
            (e.g. ``ChannelNotFoundEntity`` for a passive declare).
        :raises ConnectionLost: when the connection fails.
        """
        return await self.channels.call(what, method, purpose, kwargs)

    async def declare_exchange(self, name: str, params: dict[str, Any]) -> None:
        """Declare the exchange *name* (kiwipy 0.9: topic, not durable)."""
        await self.call(f"declaring exchange {name!r}", "exchange_declare", exchange=name, **params)

    async def passive_declare(
        self, queue: str, purpose: str = PROBE
    ) -> Optional[spec.Queue.DeclareOk]:
        """:returns: the queue's declare-ok if *queue* exists, else ``None`` (on a channel of
        its own by default: a missing queue closes the channel)."""
        try:
            ok = await self.call(
                f"checking queue {queue!r}", "queue_declare", purpose=purpose, queue=queue,
                passive=True,
            )  # fmt: skip
        except amqp_errors.ChannelNotFoundEntity:
            return None
        return ok  # type: ignore[no-any-return]

    # Consuming

    async def consume(
        self, purpose: str, queue: str, callback: Callable[..., Any], no_ack: bool = False
    ) -> str:
        """Consume *queue* on the *purpose* channel. :returns: the consumer tag."""
        return await self.channels.consume(purpose, queue, callback, no_ack)

    def is_consuming(self, purpose: str, consumer_tag: Optional[str]) -> bool:
        """See :meth:`kiwipy.rmq.connection._channels.Channels.is_consuming`."""
        return self.channels.is_consuming(purpose, consumer_tag)

    async def cancel(self, purpose: str, consumer_tag: str) -> None:
        """Stop the consumer *consumer_tag* (nothing to do if its channel is gone)."""
        await self.channels.cancel(purpose, consumer_tag)

    # Publishing

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: spec.Basic.Properties,
        mandatory: bool,
        check_size: bool = True,
        *,
        retry: bool = True,
    ) -> Any:
        """Publish *body* and wait for the broker's confirm (module doc).

        :param retry: send it again if its channel or connection broke under it, or if it
            was nacked, until ``recovery_timeout`` (the receiver may see it twice).
        :returns: the confirm frame (``pamqp.commands.Basic.Ack``).
        :raises MessageTooLarge: before publishing, if *body* is over ``max_message_size``.
        :raises UnroutableError: for a mandatory message no queue is bound for.
        :raises PublishNacked: if the broker refused it.
        :raises ConnectionLost: if it was not confirmed within ``recovery_timeout``.
        """
        if check_size and len(body) > self.max_message_size:
            raise exceptions.MessageTooLarge(len(body), self.max_message_size)
        attempt = PublishAttempt(self, exchange, routing_key, retry)
        while True:
            try:
                channel = await self._publish_channel(attempt.deadline)
            except exceptions.ConnectionLost as exc:
                await attempt.after_loss(exc)
                continue
            try:
                # same frames and outcomes as channel.basic_publish, without its per-message
                # coroutines and pamqp marshalling (issue 6)
                outgoing = _fastpublish.Outgoing(exchange, routing_key, body, properties, mandatory)
                publishing = _fastpublish.publish(channel, outgoing)
                if asyncio.isfuture(publishing):  # written: its confirm is all there is to wait for
                    return await _amqp.confirmed(publishing, attempt.confirm_window())
                return await _amqp.guarded(channel, publishing, attempt.confirm_window())
            except _amqp.LINK_ERRORS as exc:
                await attempt.after(exc, channel)

    def ready_channel(self) -> Optional[aiormq.abc.AbstractChannel]:
        """See :meth:`kiwipy.rmq.connection._channels.Channels.ready_channel`."""
        return self.channels.ready_channel()

    async def _publish_channel(self, deadline: float) -> aiormq.abc.AbstractChannel:
        channel = self.ready_channel()
        if channel is None:
            await self._recovery.wait_ready(deadline)
            channel = await self.channel(PUBLISH)
        return channel

    def renew_publish_channel(self, channel: aiormq.abc.AbstractChannel) -> None:
        """See :meth:`kiwipy.rmq.connection._channels.Channels.renew_publish_channel`."""
        self.channels.renew_publish_channel(channel)

    # Restoration

    def add_restorer(self, purpose: str, key: object, restorer: Restorer) -> None:
        """Run *restorer* after every reconnection (and when *purpose*'s channel is closed
        or one of its consumers is cancelled by the broker); *key* identifies it for
        :meth:`remove_restorer`. Restorers must be idempotent (:mod:`._recovery`)."""
        self._restoration.add(purpose, key, restorer)

    def remove_restorer(self, purpose: str, key: object) -> None:
        self._restoration.remove(purpose, key)

    def forget_channels(self) -> None:
        """The connection is gone: every channel is to be opened again."""
        self.channels.forget()

    # Closing

    def begin_close(self) -> None:
        """From now on, operations fail at once instead of waiting for a reconnection."""
        self._closing = True
        self._ready.set()  # wake waiting sends: they fail in ``_check_can_wait`` or on use

    async def close(self) -> None:
        """Close the session's channels (and the connection if it owns it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._watchdog.stop()
        self._recovery.close()
        await self.channels.close()
        if self._owns_connection and not self.connection.is_closed:
            await _amqp.bounded(self.connection.close())
        self.report(_events.CLOSED)
