"""One aio-pika connection seen as a few AMQP channels, each with one purpose.

Invariants:

* Channels are aiormq channels opened on the aio-pika connection's transport, one per
  purpose (``topology`` for declares, ``publish`` for every send, one per consumer group).
  A closed channel is reopened on next use; nothing is declared per message.
* Every publish waits for the broker's confirm; its failures are translated once
  (:mod:`kiwipy.rmq._amqp`). A send made while the connection is down waits for it to come
  back for at most ``recovery_timeout`` seconds, then raises :class:`~kiwipy.ConnectionLost`.
* The session keeps no topology of its own: each component registers a *restorer* (a
  coroutine function that re-declares its queues and consumes again) under a purpose. After
  aio-pika reconnects, every restorer runs, in registration order; when the broker closes a
  consumer channel but the connection lives, that purpose's restorers run (at most once a
  second, so a consume that keeps failing cannot spin).
* Connection state changes are reported to listeners as ``'connected'``,
  ``'disconnected'``, ``'reconnected'``, ``'lost'`` (not back within ``recovery_timeout``,
  or a connection that cannot reconnect) and ``'closed'``, and logged once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, Callable, Optional

import aiormq
import aiormq.abc
from aiormq import exceptions as amqp_errors
from pamqp import commands as spec

from .. import encoders, exceptions
from . import _amqp
from ._options import RmqOptions, resolve_encoder, resolve_options

__all__ = ("PUBLISH", "TOPOLOGY", "Session")

_LOGGER = logging.getLogger("kiwipy.rmq.communicator")

TOPOLOGY = "topology"
PUBLISH = "publish"
_CLOSE_TIMEOUT = 1.0
_RESTORE_SPACING = 1.0

Restorer = Callable[[], Awaitable[None]]
Listener = Callable[[str], None]


class Session:
    """Channels, confirmed publishing and restoration over one aio-pika connection.

    :param connection: an aio-pika connection (robust or not), connected or not.
    :param options: the resolved communicator options.
    :param owns_connection: close the connection with the session.
    """

    def __init__(self, connection: Any, options: RmqOptions, owns_connection: bool = False) -> None:
        self.connection = connection
        self.options = options
        self.encoder: encoders.Encoder = resolve_encoder(options)
        self.max_message_size = options["max_message_size"]
        self._owns_connection = owns_connection
        self._channels: dict[str, aiormq.abc.AbstractChannel] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._qos: dict[str, tuple[int, int]] = {}
        self._restorers: dict[str, dict[object, Restorer]] = {}
        self._last_restore: dict[str, float] = {}
        self._listeners: list[Listener] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._lost_timer: Optional[asyncio.TimerHandle] = None
        self._closed = False
        self._closing = False
        self._robust = hasattr(connection, "reconnect_callbacks")
        connection.close_callbacks.add(self._on_connection_closed)
        if self._robust:
            connection.reconnect_callbacks.add(self._on_reconnected)

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
        loop: asyncio.AbstractEventLoop = self.connection.loop
        return loop

    @property
    def testing_mode(self) -> bool:
        return bool(self.options["testing_mode"])

    @property
    def closed(self) -> bool:
        return self._closed

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on every connection state change (see module doc)."""
        self._listeners.append(listener)

    @property
    def listeners(self) -> tuple[Listener, ...]:
        return tuple(self._listeners)

    def _emit(self, event: str, level: int = logging.INFO, detail: str = "") -> None:
        _LOGGER.log(level, "connection to %s %s%s", self.connection, event, detail)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                _LOGGER.exception("connection listener %r failed on %r", listener, event)

    async def start(self) -> None:
        """Connect the connection if needed and report ``'connected'``."""
        if self._closed:
            raise exceptions.CommunicatorClosed
        if self.connection.transport is None and not self.connection.is_closed:
            await self.connection.connect()
        self._emit("connected", logging.DEBUG)

    async def wait_connected(self) -> aiormq.abc.AbstractConnection:
        """:returns: the live aiormq connection, waiting up to ``recovery_timeout`` for it.

        :raises CommunicatorClosed: once the session is closed.
        :raises ConnectionLost: if the connection is gone and does not come back in time.
        """
        if self._closed:
            raise exceptions.CommunicatorClosed
        transport = self.connection.transport
        if transport is not None and not transport.connection.is_closed:
            return transport.connection  # type: ignore[no-any-return]
        if not self._robust or self.connection.is_closed or self._closing:
            raise _amqp.ConnectionGone("the connection is closed and cannot reconnect")
        timeout = self.options["recovery_timeout"]
        deadline = self.loop.time() + timeout
        while transport is None or transport.connection.is_closed:
            remaining = deadline - self.loop.time()
            if remaining <= 0 or self._closed:
                raise _amqp.ConnectionGone(f"the connection was not restored within {timeout} s")
            with contextlib.suppress(asyncio.TimeoutError):
                # ``connected`` may be set a moment before the new transport is in place
                await asyncio.wait_for(self.connection.connected.wait(), min(remaining, 0.5))
                await asyncio.sleep(0.01)
            transport = self.connection.transport
        return transport.connection  # type: ignore[no-any-return]

    # Channels

    async def channel(self, purpose: str) -> aiormq.abc.AbstractChannel:
        """:returns: the open channel for *purpose*, opening it (again) if needed."""
        channel = self._channels.get(purpose)
        if channel is not None and not channel.is_closed:
            return channel
        lock = self._opening.setdefault(purpose, asyncio.Lock())
        async with lock:
            channel = self._channels.get(purpose)
            if channel is None or channel.is_closed:
                channel = await self._open(purpose)
        return channel

    async def _open(self, purpose: str) -> aiormq.abc.AbstractChannel:
        connection = await self.wait_connected()
        try:
            channel = await connection.channel(
                publisher_confirms=purpose == PUBLISH, on_return_raises=True
            )
            if purpose in self._qos:
                size, count = self._qos[purpose]
                await channel.basic_qos(prefetch_size=size, prefetch_count=count)
        except _amqp.SEND_ERRORS + (RuntimeError,) as exc:
            raise _amqp.translate(exc, f"opening the {purpose} channel") from exc
        self._channels[purpose] = channel
        channel.closing.add_done_callback(lambda done: self._on_channel_closed(purpose, done))
        return channel

    def set_prefetch(self, purpose: str, prefetch_size: int, prefetch_count: int) -> None:
        """Consumers on *purpose* get this per-consumer prefetch (no global QoS: RabbitMQ 4
        removed it). Takes effect when the channel is opened, so call it first."""
        self._qos[purpose] = (prefetch_size, prefetch_count)

    def _on_channel_closed(self, purpose: str, closing: asyncio.Future[Any]) -> None:
        exc = None if closing.cancelled() else closing.exception()
        if self._closed or not _amqp.is_channel_error(exc):
            return  # our own close, or the connection went (the reconnection restores)
        if purpose not in self._restorers:
            _LOGGER.debug("the broker closed the %s channel: %s", purpose, exc)
            return  # reopened on next use
        _LOGGER.warning("the broker closed the %s channel: %s; restoring it", purpose, exc)
        self._spawn(self._restore_purpose(purpose))

    # Topology (all on the topology channel, whose failures do not disturb consumers)

    async def call(self, what: str, method: str, **kwargs: Any) -> Any:
        """Run the aiormq channel method *method* on the topology channel.

        :raises aiormq.exceptions.ChannelClosed: subclasses, for the caller to interpret
            (e.g. ``ChannelNotFoundEntity`` for a passive declare).
        :raises ConnectionLost: when the connection fails.
        """
        channel = await self.channel(TOPOLOGY)
        try:
            return await getattr(channel, method)(**kwargs)
        except amqp_errors.ChannelClosed:
            raise
        except _amqp.SEND_ERRORS as exc:
            raise _amqp.translate(exc, what) from exc

    async def declare_exchange(self, name: str, params: dict[str, Any]) -> None:
        """Declare the exchange *name* (kiwipy 0.9: topic, not durable)."""
        await self.call(f"declaring exchange {name!r}", "exchange_declare", exchange=name, **params)

    async def passive_declare(self, queue: str) -> Optional[spec.Queue.DeclareOk]:
        """:returns: the queue's declare-ok if *queue* exists, else ``None``."""
        try:
            ok = await self.call(
                f"checking queue {queue!r}", "queue_declare", queue=queue, passive=True
            )
        except amqp_errors.ChannelNotFoundEntity:
            return None
        return ok  # type: ignore[no-any-return]

    # Consuming

    async def consume(
        self, purpose: str, queue: str, callback: Callable[..., Any], no_ack: bool = False
    ) -> str:
        """Consume *queue* on the *purpose* channel. :returns: the consumer tag."""
        channel = await self.channel(purpose)
        try:
            ok = await channel.basic_consume(queue, callback, no_ack=no_ack)
        except _amqp.SEND_ERRORS as exc:
            raise _amqp.translate(exc, f"consuming {queue!r}") from exc
        return str(ok.consumer_tag)

    async def cancel(self, purpose: str, consumer_tag: str) -> None:
        """Stop the consumer *consumer_tag* (nothing to do if its channel is gone)."""
        channel = self._channels.get(purpose)
        if channel is None or channel.is_closed:
            return
        with contextlib.suppress(*_amqp.SEND_ERRORS):
            await channel.basic_cancel(consumer_tag)

    # Publishing

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: spec.Basic.Properties,
        mandatory: bool,
        check_size: bool = True,
    ) -> Any:
        """Publish *body* and wait for the broker's confirm.

        :returns: the confirm frame (``pamqp.commands.Basic.Ack``).
        :raises MessageTooLarge: before publishing, if *body* is over ``max_message_size``.
        :raises UnroutableError: for a mandatory message no queue is bound for.
        :raises PublishNacked: if the broker refused it.
        :raises ConnectionLost: if the channel or connection failed.
        """
        if check_size and len(body) > self.max_message_size:
            raise exceptions.MessageTooLarge(len(body), self.max_message_size)
        channel = self._channels.get(PUBLISH)
        if channel is None or channel.is_closed:
            channel = await self.channel(PUBLISH)
        try:
            return await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=mandatory,
            )
        except _amqp.SEND_ERRORS as exc:
            raise _amqp.translate(exc, f"publishing to {exchange!r}/{routing_key!r}") from exc

    # Restoration

    def add_restorer(self, purpose: str, key: object, restorer: Restorer) -> None:
        """Run *restorer* after every reconnection (and when *purpose*'s channel is closed
        by the broker); *key* identifies it for :meth:`remove_restorer`."""
        self._restorers.setdefault(purpose, {})[key] = restorer

    def remove_restorer(self, purpose: str, key: object) -> None:
        self._restorers.get(purpose, {}).pop(key, None)

    def _on_connection_closed(self, _sender: Any, exc: Optional[BaseException]) -> None:
        if self._closed or self.connection.is_closed or self.connection.close_called:
            return
        self._channels.clear()
        self._emit("disconnected", logging.WARNING, f" ({exc!r})" if exc else "")
        if not self._robust:
            self._emit("lost", logging.ERROR)
            return
        if self._lost_timer is None:
            timeout = self.options["recovery_timeout"]
            self._lost_timer = self.loop.call_later(timeout, self._emit, "lost", logging.ERROR)

    def _on_reconnected(self, _sender: Any) -> None:
        if self._closed:
            return
        if self._lost_timer is not None:
            self._lost_timer.cancel()
            self._lost_timer = None
        self._channels.clear()
        self._spawn(self._restore_all())

    async def _restore_all(self) -> None:
        for purpose in list(self._restorers):
            await self._run_restorers(purpose)
        self._emit("reconnected")

    async def _restore_purpose(self, purpose: str) -> None:
        wait = self._last_restore.get(purpose, 0.0) + _RESTORE_SPACING - self.loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        await self._run_restorers(purpose)

    async def _run_restorers(self, purpose: str) -> None:
        self._last_restore[purpose] = self.loop.time()
        for key, restorer in list(self._restorers.get(purpose, {}).items()):
            try:
                await restorer()
            except Exception:
                _LOGGER.exception("could not restore %s after reconnecting", key)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Closing

    def begin_close(self) -> None:
        """From now on, operations fail at once instead of waiting for a reconnection."""
        self._closing = True

    async def close(self) -> None:
        """Close the session's channels (and the connection if it owns it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._lost_timer is not None:
            self._lost_timer.cancel()
        for task in list(self._background):
            task.cancel()
        self.connection.close_callbacks.discard(self._on_connection_closed)
        if self._robust:
            self.connection.reconnect_callbacks.discard(self._on_reconnected)
        channels, self._channels = list(self._channels.values()), {}
        await _bounded(*(ch.close() for ch in channels if not ch.is_closed))
        if self._owns_connection and not self.connection.is_closed:
            await _bounded(self.connection.close())
        self._emit("closed", logging.DEBUG)


async def _bounded(*awaitables: Awaitable[Any]) -> None:
    """Await *awaitables* for at most a few seconds, ignoring their errors: closing must
    finish even when the broker is gone."""
    if not awaitables:
        return
    tasks = [asyncio.ensure_future(each) for each in awaitables]
    _done, pending = await asyncio.wait(tasks, timeout=_CLOSE_TIMEOUT)
    for task in pending:
        task.cancel()
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: closing errors do not matter
