"""Every reach into aiormq's and aio-pika's undocumented state, and nothing else.

kiwipy uses aiormq, aio-pika and pamqp through their public surface (what ``aiormq.abc``,
``aio_pika.abc`` and pamqp's documented API declare), except for the accesses below. Each is
needed for a reason stated with it, and each is an assumption about one release line of those
libraries (the ranges pinned in ``pyproject.toml``, extra ``rmq``):

* a channel's ``consumers`` table, which aiormq empties silently when the broker cancels a
  consumer (:func:`consumer_table`, :func:`replace_consumer_table`);
* a channel's publisher-confirm bookkeeping (``publisher_confirms``, ``delivery_tag``,
  ``confirmations``, ``message_id_delivery_tag``), its ``lock`` and the connection's writer
  queue shared through ``channel.write_queue``, which let a publish or an ack be written
  without a coroutine each (:func:`can_write_directly`, :func:`register_confirm`,
  :func:`join_frames` and its siblings, used by :mod:`kiwipy.rmq.send._fastpublish` and
  :mod:`kiwipy.rmq.receive._acks`); the writer reads ``payload``, ``should_close``,
  ``should_drain`` and calls ``drain()`` on each item (:class:`_Joined`);
* ``channel.max_content_size``, the body frame size aiormq splits at;
* aiormq's TCP and TLS transport factories, aio-pika's pass-through of ``transport_factory``
  to ``aiormq.connect`` and its private ``_on_connection_close`` hook, which together let
  :class:`RobustConnection` close the sockets aiormq leaks and reset a stalled one;
* aio-pika's ``reconnect_interval`` (read at every attempt, so it can be paced) and ``loop``;
* aio-pika's ``_on_connected`` hook, where a connection to one of several endpoints learns
  which node it reached (:mod:`kiwipy.rmq.connection._endpoints`);
* aiormq's ``ChannelClosed(None, None)`` for a channel *we* closed, told apart from the
  broker's ``channel.close`` (:func:`closed_by_broker`).

``tests/unit/test_aiormq_boundary.py`` checks each of them against the installed versions
and names the upgrade that broke one; nothing else in kiwipy may touch such state.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Optional

import aio_pika
import aiormq
import aiormq.abc
import aiormq.connection
from aiormq import exceptions as amqp_errors
from yarl import URL

from . import _endpoints

__all__ = (
    "RobustConnection",
    "abort_sockets",
    "can_join",
    "can_write_directly",
    "closed_by_broker",
    "consumer_table",
    "event_loop",
    "join_frames",
    "max_content_size",
    "pending_confirms",
    "reconnect_interval",
    "register_confirm",
    "replace_consumer_table",
    "seal_frames",
    "set_reconnect_interval",
    "write_queue_full",
)

# -- channels: consumers -------------------------------------------------------------------


def consumer_table(channel: aiormq.abc.AbstractChannel) -> Optional[dict[str, Any]]:
    """:returns: aiormq's ``consumer_tag -> callback`` table of *channel* (entries leave it
    on our ``basic.cancel-ok`` and on the broker's ``basic.cancel``), or ``None`` if this
    aiormq keeps none."""
    table = getattr(channel, "consumers", None)
    return table if isinstance(table, dict) else None


def replace_consumer_table(channel: aiormq.abc.AbstractChannel, table: dict[str, Any]) -> None:
    """Make *table* (a ``dict`` subclass holding the same entries) *channel*'s consumer table."""
    channel.consumers = table  # type: ignore[attr-defined]


# -- channels: publisher confirms and direct writes -----------------------------------------

#: The channel attributes a direct write needs; without any of them (another aiormq), the
#: callers fall back to ``basic_publish``/``basic_ack``.
_DIRECT = ("confirmations", "message_id_delivery_tag", "delivery_tag", "write_queue", "lock")


def can_write_directly(channel: aiormq.abc.AbstractChannel) -> bool:
    """:returns: whether a confirmed publish may be numbered and written on *channel* now,
    bypassing ``basic_publish``: the channel is open with publisher confirms and nothing holds
    its lock (no ``basic_publish`` is half-way). Whether its writer's queue has room for it
    is :func:`write_queue_full`'s to say."""
    if channel.is_closed or not getattr(channel, "publisher_confirms", False):
        return False
    if not all(hasattr(channel, name) for name in _DIRECT):
        return False
    ch: Any = channel
    return not ch.lock.locked()


def register_confirm(channel: aiormq.abc.AbstractChannel, message_id: str) -> asyncio.Future[Any]:
    """Number the next publish on *channel* as ``basic_publish`` does and register its
    confirm. :returns: the future aiormq resolves with the ``basic.ack`` frame, fails with
    ``DeliveryError`` on ``basic.nack``, with ``PublishError`` on a ``basic.return`` of the
    message *message_id*, and with the channel's error when it closes."""
    ch: Any = channel
    ch.delivery_tag += 1
    tag = ch.delivery_tag
    future: asyncio.Future[Any] = ch.create_future()
    ch.confirmations[tag] = future
    ch.message_id_delivery_tag[message_id] = tag
    future.add_done_callback(lambda _: ch.message_id_delivery_tag.pop(message_id, None))
    return future


def pending_confirms(channel: aiormq.abc.AbstractChannel) -> list[asyncio.Future[Any]]:
    """:returns: the confirm futures of *channel*'s publishes not answered yet."""
    confirms = getattr(channel, "confirmations", {}).values()
    return [each for each in confirms if asyncio.isfuture(each) and not each.done()]


def max_content_size(channel: aiormq.abc.AbstractChannel) -> int:
    """:returns: the size of the body frames aiormq splits a message body into on *channel*."""
    size: int = channel.max_content_size  # type: ignore[attr-defined]
    return size


def write_queue_full(channel: aiormq.abc.AbstractChannel) -> bool:
    """:returns: whether the writer queue of *channel*'s connection has no room."""
    full: bool = channel.write_queue.full()  # type: ignore[attr-defined]
    return full


# -- frames written together ---------------------------------------------------------------
#
# aiormq's writer takes one item at a time from a queue of ten (``channel.write_queue``,
# shared by the connection) and makes a ``send`` system call for each: it reads ``payload``,
# ``should_close`` and ``should_drain``, and calls ``drain()`` after draining the socket.
# :func:`join_frames` puts a :class:`_Joined` item of that shape in the queue at once, so it
# keeps its place before anything queued after it (a ``channel.close`` in particular), and
# frames added while the writer has not taken it go out with it, in one write, earlier than
# they would have alone. The acks of a consumer and the publishes of many concurrent senders
# then cost one item and one system call together, and a publish never has to wait in
# ``basic_publish`` because ten items are queued.
#
# Earlier is always allowed for an ack. For a publish it is allowed as long as no publish of
# the channel is queued behind the open item (the broker numbers publishes in the order it
# reads them, and each confirm was registered under the next number when its frames were
# joined): a caller leaving a publish to ``basic_publish`` calls :func:`seal_frames` first.
#
# The open item of each channel is found through a table that holds channels weakly, and an
# item holds its channel weakly too: a channel whose connection died before its writer took
# the item is freed with that connection (issue 11).


class _Joined:
    """The writer's item that frames of one channel join until the writer takes it."""

    should_close = False

    def __init__(self, channel: Any) -> None:
        self._channel = weakref.ref(channel)
        self.number: int = channel.number
        self.frames: list[bytes] = []
        self.drained: Optional[asyncio.Future[None]] = None

    @property
    def payload(self) -> bytes:
        self.seal()  # taken by the writer: later frames need an item of their own
        return b"".join(self.frames)

    def seal(self) -> None:
        """Let no more frames join this item."""
        channel = self._channel()
        if channel is not None and _OPEN.get(channel) is self:
            del _OPEN[channel]

    @property
    def should_drain(self) -> bool:
        return self.drained is not None and not self.drained.done()

    def drain(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def __repr__(self) -> str:
        return f"<frames of channel {self.number}: {len(self.frames)}>"


#: The item of each channel still waiting in its writer's queue (loop thread only).
_OPEN: weakref.WeakKeyDictionary[Any, _Joined] = weakref.WeakKeyDictionary()


def can_join(channel: aiormq.abc.AbstractChannel) -> bool:
    """:returns: whether frames for *channel* may be queued now: its item still waits in the
    writer's queue, or the queue has room for a new one."""
    return channel in _OPEN or not write_queue_full(channel)


def join_frames(
    channel: aiormq.abc.AbstractChannel, frames: bytes, drain: bool = False
) -> Optional[asyncio.Future[None]]:
    """Queue *frames* (whole frames of *channel*) in its open item, or in a new one (call only
    when :func:`can_join`).

    :returns: with *drain*, a future resolved once the writer handed them to the socket
        (failed, as ``basic_ack``'s, when the channel or connection closes first).
    """
    ch: Any = channel
    item = _OPEN.get(ch)
    if item is None:
        item = _OPEN[ch] = _Joined(ch)
        ch.write_queue.put_nowait(item)
    item.frames.append(frames)
    if drain and item.drained is None:
        item.drained = ch.create_future()
    return item.drained if drain else None


def seal_frames(channel: aiormq.abc.AbstractChannel) -> None:
    """Let no more frames join the item of *channel* now in its writer's queue."""
    item = _OPEN.get(channel)
    if item is not None:
        item.seal()


# -- exceptions ----------------------------------------------------------------------------


def closed_by_broker(exc: Optional[BaseException]) -> bool:
    """:returns: whether *exc* is the broker's ``channel.close`` (aiormq's ``ChannelClosed``
    with the broker's reply code), not aiormq's ``ChannelClosed(None, None)`` for a channel
    closed by our side."""
    return isinstance(exc, amqp_errors.ChannelClosed) and bool(exc.args) and exc.args[0] is not None


# -- connections -----------------------------------------------------------------------------


def event_loop(connection: Any) -> asyncio.AbstractEventLoop:
    """:returns: the event loop of the aio-pika *connection*."""
    loop: asyncio.AbstractEventLoop = connection.loop
    return loop


def reconnect_interval(connection: Any) -> Optional[float]:
    """:returns: the pause of the aio-pika *connection* between reconnection attempts, or
    ``None`` for a connection that does not reconnect."""
    interval = getattr(connection, "reconnect_interval", None)
    return None if interval is None else float(interval)


def set_reconnect_interval(connection: Any, seconds: float) -> None:
    """Pause *seconds* before *connection*'s next reconnection attempt (aio-pika reads the
    attribute at each attempt)."""
    connection.reconnect_interval = seconds


class _Transports(aiormq.TransportFactory):
    """Opens aiormq's sockets as aiormq would, and remembers them to close those it leaks.

    When the broker closes the socket during the AMQP handshake (it accepts connections while
    it starts or stops), or an attempt is cancelled or times out, aiormq raises without
    closing its end; and when the broker drops an open connection, aiormq's own close can
    skip closing the socket (its ``write_eof`` fails first). Such a socket stays open until
    the garbage collector finds it. :meth:`sweep` closes every socket whose peer has hung up
    and that nobody closed, or with ``everything``, every socket still open.
    """

    def __init__(self, endpoints: Optional[_endpoints.Endpoints] = None) -> None:
        # Strong references: a leaked socket must still be here when we sweep, not collected
        # first (its collection is what warns). Sweeps drop the closed ones.
        self._opened: dict[asyncio.StreamWriter, asyncio.StreamReader] = {}
        self.endpoints = endpoints

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.sweep()
        if self.endpoints is None:
            return await self._create(url, kwargs)
        return await self.endpoints.open(url, lambda target: self._create(target, kwargs))

    async def _create(
        self, url: URL, kwargs: dict[str, Any]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        inner: aiormq.TransportFactory
        if url.scheme == "amqps":
            inner = aiormq.connection.TLSTransportFactory()
        else:
            inner = aiormq.connection.TCPTransportFactory()
        reader, writer = await inner.create(url, **kwargs)
        self._opened[writer] = reader
        return reader, writer

    def sweep(self, everything: bool = False) -> int:
        """Close the sockets described above. :returns: how many were open and are reset."""
        reset = 0
        for writer, reader in list(self._opened.items()):
            if writer.transport.is_closing():
                del self._opened[writer]
            elif everything or reader.at_eof():
                writer.transport.abort()
                del self._opened[writer]
                reset += 1
        return reset


class RobustConnection(aio_pika.RobustConnection):
    """aio-pika's reconnecting connection whose failed connection attempts leak no socket
    (see :class:`_Transports`), and which with *endpoints* connects to whichever node of a
    cluster answers (:mod:`kiwipy.rmq.connection._endpoints`). What :func:`kiwipy.rmq.async_connect`
    uses by default, with a bound on each attempt (``kiwipy.rmq.connection._amqp.CONNECT_TIMEOUT``)."""

    def __init__(
        self,
        url: URL,
        loop: Optional[asyncio.AbstractEventLoop] = None,
        endpoints: Optional[_endpoints.Endpoints] = None,
        **kwargs: Any,
    ):
        super().__init__(url, loop=loop, **kwargs)
        self._transports = _Transports(endpoints)
        # aio-pika hands its kwargs to aiormq.connect at each attempt.
        self.kwargs["transport_factory"] = self._transports

    async def _on_connected(self) -> None:
        endpoints = self._transports.endpoints
        if endpoints is not None:  # name the node we are on (logs, events); the next
            self.url = endpoints.current  # attempt aims at the next one anyway
        await super()._on_connected()

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # The connection, or an attempt to make one, failed: no socket of ours is in use
        # until the next attempt, which comes after this.
        self._transports.sweep(everything=True)
        await super()._on_connection_close(closing)

    async def close(self, exc: Any = asyncio.CancelledError) -> None:
        try:
            await super().close(exc)
        finally:  # closing cancels an attempt under way, whose socket aiormq leaves open
            self._transports.sweep(everything=True)

    def abort_sockets(self) -> bool:
        """Reset every socket of this connection still open: the live connection's (aiormq
        then fails it and the connection recovers) and any leaked one.

        :returns: whether one was open.
        """
        return self._transports.sweep(everything=True) > 0


def abort_sockets(connection: Any) -> bool:
    """Reset the sockets of the aio-pika *connection* (see
    :meth:`RobustConnection.abort_sockets`). :returns: ``False`` if none was open or the
    connection is not a :class:`RobustConnection` (a custom ``connection_factory``), whose
    sockets kiwipy does not know."""
    return isinstance(connection, RobustConnection) and connection.abort_sockets()
