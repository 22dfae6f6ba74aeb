"""The channels of a session, one per purpose, and the consumers on them
(see :mod:`kiwipy.rmq.connection._session`, which owns one :class:`Channels`).

Invariants:

* Channels are aiormq channels opened on the aio-pika connection's transport, one per
  purpose (:data:`TOPOLOGY` for declares, :data:`PUBLISH` for every send, one per consumer
  group). A closed channel is reopened on next use. Calls that may close their channel
  (:data:`PROBE`: passive declares, claims) get a fresh channel each.
* A channel closed by the broker, or a consumer cancelled by it (``basic.cancel``), has its
  purpose restored (:mod:`kiwipy.rmq.connection._recovery`) if the purpose has restorers, with the
  connection alive; a consumer cancelled by the broker is reported as
  ``consumer-cancelled``. Our own cancels and closes restore nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable
from typing import Any, Callable, Optional

import aiormq.abc
from aiormq import exceptions as amqp_errors

from ..send import _publishing
from . import _access, _aiormq_boundary, _amqp, _events
from ._recovery import Restoration
from ._session_view import ChannelHost

__all__ = ("PROBE", "PUBLISH", "TOPOLOGY", "Channels")

_LOGGER = logging.getLogger("kiwipy.rmq.communicator")

TOPOLOGY = "topology"
PUBLISH = "publish"
PROBE = "probe"


class Channels:
    """The open channel of each purpose, their QoS, and the consumers on them.

    :param host: the session (its closed state, its reports, its live connection).
    :param restoration: the restorers to run when the broker closes a channel or cancels a
        consumer.
    :param ready: set while nothing is being restored (the publish channel is ready then).
    """

    def __init__(self, host: ChannelHost, restoration: Restoration, ready: asyncio.Event) -> None:
        self._host = host
        self._restoration = restoration
        self._ready = ready
        self._channels: dict[str, aiormq.abc.AbstractChannel] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._qos: dict[str, tuple[int, int]] = {}
        self._consumers: dict[str, str] = {}  # consumer tag -> queue, for reports
        self._cancelling: set[str] = set()
        self._background: set[asyncio.Future[Any]] = set()

    # Opening

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
        connection = await self._host.wait_connected()
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
        _amqp.watch_consumers(channel, lambda tag: self._on_consumer_gone(purpose, channel, tag))
        return channel

    def set_prefetch(self, purpose: str, prefetch_size: int, prefetch_count: int) -> None:
        """Consumers on *purpose* get this per-consumer prefetch (no global QoS: RabbitMQ 4
        removed it). Takes effect when the channel is opened, so call it first."""
        self._qos[purpose] = (prefetch_size, prefetch_count)

    def _on_channel_closed(self, purpose: str, closing: asyncio.Future[Any]) -> None:
        exc = None if closing.cancelled() else closing.exception()
        if self._host.closed or not _amqp.is_channel_error(exc):
            return  # our own close, or the connection went (the reconnection restores)
        if not self._restoration.has(purpose):
            _LOGGER.debug("the broker closed the %s channel: %s", purpose, exc)
            return  # reopened on next use
        _LOGGER.warning("the broker closed the %s channel: %s; restoring it", purpose, exc)
        self._restoration.restore_soon(purpose)

    def _on_consumer_gone(self, purpose: str, channel: Any, tag: str) -> None:
        queue = self._consumers.pop(tag, "?")
        if tag in self._cancelling or self._host.closed or channel.is_closed:
            return  # we cancelled it, or its channel went (handled above)
        message = f"the broker cancelled the consumer of {queue!r}"
        self._host.report(_events.CONSUMER_CANCELLED, message)
        if self._restoration.has(purpose):
            self._restoration.restore_soon(purpose)

    # Calls

    async def call(self, what: str, method: str, purpose: str, kwargs: dict[str, Any]) -> Any:
        """See :meth:`kiwipy.rmq.connection._session.Session.call`."""
        try:
            if purpose == PROBE:
                return await self._probe(method, kwargs)
            channel = await self.channel(purpose)
            return await _amqp.guarded(channel, getattr(channel, method)(**kwargs))
        except amqp_errors.ChannelClosed as exc:
            refused = _access.refusal(exc, what, method)
            if refused is not None:
                raise refused from exc
            raise
        except _amqp.LINK_ERRORS + (RuntimeError,) as exc:
            raise _amqp.translate(exc, what) from exc

    async def _probe(self, method: str, kwargs: dict[str, Any]) -> Any:
        """Probes (passive declares of queues that may be missing or held elsewhere, claims
        that may be lost) are answered with a channel error that closes their channel. Each
        gets a channel of its own: on a shared one, the error of one would fail another in
        flight, and a call sent after the broker's close would kill the whole connection
        (``504 CHANNEL_ERROR``)."""
        connection = await self._host.wait_connected()
        channel = await _amqp.guarded(connection, connection.channel(publisher_confirms=False))
        try:
            return await _amqp.guarded(channel, getattr(channel, method)(**kwargs))
        finally:
            if not channel.is_closed:
                self._spawn(_amqp.bounded(channel.close()))

    # Consuming

    async def consume(
        self, purpose: str, queue: str, callback: Callable[..., Any], no_ack: bool = False
    ) -> str:
        """Consume *queue* on the *purpose* channel. :returns: the consumer tag."""
        channel = await self.channel(purpose)
        # Our own tag: aiormq's default draws it from the global ``random``, which the user's
        # code may seed (a repeated seed repeats the tag: DuplicateConsumerTag).
        tag = f"ctag{channel.number}.{uuid.uuid4().hex}"
        try:
            consuming = channel.basic_consume(queue, callback, no_ack=no_ack, consumer_tag=tag)
            ok = await _amqp.guarded(channel, consuming)
        except _amqp.LINK_ERRORS as exc:
            raise _amqp.translate(exc, f"consuming {queue!r}", "basic_consume") from exc
        tag = str(ok.consumer_tag)
        self._consumers[tag] = queue
        return tag

    def is_consuming(self, purpose: str, consumer_tag: Optional[str]) -> bool:
        """Whether *consumer_tag* still consumes on the current *purpose* channel (false
        after a reconnection, a channel closure or a cancellation by the broker): what makes
        restorers idempotent."""
        channel = self._channels.get(purpose)
        if not consumer_tag or channel is None or channel.is_closed:
            return False
        return consumer_tag in (_aiormq_boundary.consumer_table(channel) or ())

    async def cancel(self, purpose: str, consumer_tag: str) -> None:
        """Stop the consumer *consumer_tag* (nothing to do if its channel is gone)."""
        channel = self._channels.get(purpose)
        self._consumers.pop(consumer_tag, None)
        if channel is None or channel.is_closed:
            return
        self._cancelling.add(consumer_tag)
        try:
            with contextlib.suppress(*_amqp.SEND_ERRORS):
                await channel.basic_cancel(consumer_tag)
        finally:
            self._cancelling.discard(consumer_tag)

    # The publish channel

    def ready_channel(self) -> Optional[aiormq.abc.AbstractChannel]:
        """:returns: the publish channel if it is open on a running connection and nothing
        is being restored, else ``None`` (for publishing without waiting:
        :mod:`kiwipy.rmq.send._lane`, issue 6)."""
        channel = self._channels.get(PUBLISH)
        if channel is None or channel.is_closed or not self._ready.is_set():
            return None
        running = getattr(getattr(channel, "connection", None), "is_opened", True)
        return channel if running else None

    def renew_publish_channel(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Publish on a fresh channel from now on; *channel* is closed once the confirms of
        what was already sent on it arrived."""
        if self._channels.get(PUBLISH) is channel:
            del self._channels[PUBLISH]
            self._spawn(_publishing.close_when_drained(channel))

    # Forgetting and closing

    def forget(self) -> None:
        """The connection is gone: every channel is to be opened again."""
        self._channels.clear()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Cancel the background closes and close every open channel (bounded)."""
        for task in list(self._background):
            task.cancel()
        channels, self._channels = list(self._channels.values()), {}
        await _amqp.bounded(*(ch.close() for ch in channels if not ch.is_closed))
