"""The boundary between aiormq/aio-pika and kiwipy: error translation and message properties.

Rule: an aiormq/aio-pika exception never leaves ``kiwipy.rmq`` untranslated from a send; it is
mapped here, once, with ``raise X(...) from exc``. Two translated errors also keep the type
that kiwipy 0.9 let through, so code written against it still catches them:

* :class:`UnroutableDelivery` is a :class:`~kiwipy.UnroutableError` *and* an
  :class:`aio_pika.exceptions.DeliveryError` (kiwipy 0.9's ``RmqTaskPublisher.task_send``
  raised the latter; its own tests expect it);
* :class:`ConnectionGone` is a :class:`~kiwipy.ConnectionLost` *and* an
  :class:`aio_pika.exceptions.ChannelInvalidStateError` (plumpy catches that one around
  ``broadcast_send``).

The few places that reach into aiormq's internals live here too, each with the reason and a
fallback: :func:`watch_consumers` (aiormq drops the broker's ``basic.cancel`` silently),
:func:`abort_connection` (aiormq cannot reset a link that stopped carrying traffic) and
:class:`RobustConnection` (aiormq leaks the socket of a handshake the broker hung up on, as a
starting or stopping broker does).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from typing import Any, Callable, Optional

import aio_pika
import aiormq
import aiormq.abc
import aiormq.connection
from aiormq import exceptions as amqp_errors
from pamqp import commands as spec
from yarl import URL

from .. import _unroutable, exceptions
from . import _endpoints

__all__ = (
    "BROKEN",
    "LINK_ERRORS",
    "NACKED",
    "REFUSED",
    "RETURNED",
    "SEND_ERRORS",
    "ConnectionGone",
    "RobustConnection",
    "UnroutableDelivery",
    "abort_connection",
    "bounded",
    "connection_ended",
    "guarded",
    "exchange_arguments",
    "is_channel_error",
    "new_correlation_id",
    "properties",
    "publish_failure",
    "translate",
    "watch_consumers",
)

_LOGGER = logging.getLogger("kiwipy.rmq.communicator")

#: What aiormq may raise from a channel operation when the channel or connection is in trouble.
SEND_ERRORS = (
    amqp_errors.AMQPError,
    amqp_errors.ChannelInvalidStateError,
    ConnectionError,
    asyncio.TimeoutError,
)
#: What a publish may raise when the link fails under it (aiormq fails pending confirms with
#: whatever broke the connection: a reset, an EOF, ...).
LINK_ERRORS = SEND_ERRORS + (EOFError, OSError)


class UnroutableDelivery(exceptions.UnroutableError, amqp_errors.DeliveryError):
    """No queue is bound for a mandatory message (``basic.return``)."""

    def __init__(self, text: str, message: Optional[aiormq.abc.DeliveredMessage] = None) -> None:
        Exception.__init__(self, text)
        self.message = message
        self.frame = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return str(self.args[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r})"


class ConnectionGone(exceptions.ConnectionLost, amqp_errors.ChannelInvalidStateError):
    """The channel or connection failed, so the operation is not known to have happened."""


def translate(exc: BaseException, what: str) -> exceptions.KiwiError:
    """:returns: the kiwipy error for the aiormq error *exc* raised while doing *what*."""
    if isinstance(exc, amqp_errors.PublishError):
        # one wording on every transport (kiwipy 0.9 said "('NO_ROUTE', '[rpc].nobody')")
        returned = getattr(exc.message, "delivery", None)
        exchange = str(getattr(returned, "exchange", "?"))
        text = _unroutable.for_routing_key(str(exc.args[1]), exchange)  # (reply, routing key)
        return UnroutableDelivery(text, exc.message)
    if isinstance(exc, amqp_errors.DeliveryError):
        return exceptions.PublishNacked(f"the broker refused {what} (basic.nack)")
    if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
        return UnroutableDelivery(f"{what}: {exc}")
    return ConnectionGone(f"{what} failed: {type(exc).__name__}: {exc}")


def exchange_arguments(
    exchange_params: Optional[dict[str, Any]], testing_mode: bool
) -> dict[str, Any]:
    """:returns: aiormq ``exchange_declare`` arguments: kiwipy 0.9's topic exchange, not
    durable, auto-deleting only in testing mode; *exchange_params* (aio-pika's
    ``declare_exchange`` keywords, as kiwipy 0.9 took them) override them."""
    params: dict[str, Any] = {"type": "topic", "durable": False}
    params.update(exchange_params or {})
    if testing_mode:
        params.setdefault("auto_delete", True)
    kind = params.pop("type")
    params["exchange_type"] = getattr(kind, "value", kind)
    return params


def new_correlation_id() -> str:
    """:returns: a correlation id as kiwipy 0.9 makes them (``str(uuid4())``)."""
    return str(uuid.uuid4())


def properties(
    *,
    persistent: bool = False,
    correlation_id: Optional[str] = None,
    reply_to: Optional[str] = None,
    content_type: Optional[str] = None,
    headers: Optional[dict[str, Any]] = None,
) -> spec.Basic.Properties:
    """:returns: AMQP properties as kiwipy 0.9 sets them (delivery mode 2 for tasks, 1
    otherwise); ``content_type`` is set only for encoders that have one (not YAML)."""
    return spec.Basic.Properties(
        delivery_mode=2 if persistent else 1,
        correlation_id=correlation_id,
        reply_to=reply_to,
        content_type=content_type,
        headers=headers,
        priority=0,
    )


def is_channel_error(exc: Optional[BaseException]) -> bool:
    """:returns: whether *exc* closed only a channel (the broker's ``channel.close``), so the
    connection is still usable."""
    return (
        isinstance(exc, amqp_errors.ChannelClosed) and getattr(exc, "args", (None,))[0] is not None
    )


# How a publish failed (see :func:`publish_failure`)
RETURNED = "returned"
NACKED = "nacked"
REFUSED = "refused"
BROKEN = "broken"


def publish_failure(exc: BaseException, exchange: str) -> str:
    """:returns: how a publish to *exchange* that raised *exc* failed:

    * :data:`RETURNED`: no queue is bound for it (``basic.return``); it was not taken;
    * :data:`NACKED`: the broker refused responsibility (``basic.nack``);
    * :data:`REFUSED`: the broker closed the channel because of *this* message (its
      exchange does not exist, or is not ours to use); sending it again cannot help;
    * :data:`BROKEN`: the channel or connection failed under it (or the broker closed the
      channel because of another message on it), so whether it was taken is unknown.
    """
    if isinstance(exc, amqp_errors.PublishError):
        return RETURNED
    if isinstance(exc, amqp_errors.DeliveryError):
        return NACKED
    if is_channel_error(exc) and exchange and f"'{exchange}'" in str(exc):
        return REFUSED
    return BROKEN


class _ConsumerTable(dict):  # type: ignore[type-arg]
    """aiormq's ``channel.consumers`` with a hook on removal.

    aiormq removes a consumer from this dict both when *we* cancel it (``basic.cancel-ok``)
    and when the broker does (``basic.cancel``, e.g. its queue was deleted), and tells nobody
    about the latter: without this hook a cancelled consumer would just stop receiving.
    """

    def __init__(self, initial: dict[str, Any], on_removed: Callable[[str], None]) -> None:
        super().__init__(initial)
        self._on_removed = on_removed

    def pop(self, key: Any, *default: Any) -> Any:
        present = key in self
        value = super().pop(key, *default)
        if present:
            self._on_removed(key)
        return value


def watch_consumers(channel: aiormq.abc.AbstractChannel, on_removed: Callable[[str], None]) -> None:
    """Call ``on_removed(consumer_tag)`` whenever a consumer of *channel* goes away, whoever
    cancelled it (the caller tells its own cancellations apart)."""
    consumers = getattr(channel, "consumers", None)
    if isinstance(consumers, dict):
        channel.consumers = _ConsumerTable(consumers, on_removed)  # type: ignore[attr-defined]
    else:  # pragma: no cover - another aiormq layout: cancellations go unnoticed
        _LOGGER.warning("cannot watch the consumers of %r for broker cancellations", channel)


def connection_ended(channel: Any) -> asyncio.Future[Any]:
    """:returns: a future done once the connection of *channel* (an aiormq channel, or the
    connection itself) has closed (aiormq's ``closing``), or one never done if there is no
    such connection."""
    closing = getattr(getattr(channel, "connection", channel), "closing", None)
    if asyncio.isfuture(closing):
        return closing
    return asyncio.get_running_loop().create_future()


def abort_connection(connection: aiormq.abc.AbstractConnection, reason: str) -> None:
    """Reset *connection*'s socket now, so aiormq fails it and aio-pika reconnects.

    A graceful ``close()`` would send ``connection.close`` into a link that carries nothing
    and could wait for the socket to flush forever; aiormq itself never closes the socket of
    a connection it finds stuck (it leaks it). aiormq keeps the stream writer only in its
    writer task, so it is taken from there; without it, the connection is closed normally.
    """
    writer = _stream_writer(connection)
    if writer is not None:
        writer.transport.abort()
        return
    _LOGGER.debug("no stream writer found for %s; closing it instead", connection)
    task = asyncio.ensure_future(connection.close(ConnectionResetError(reason)))
    _ABORTING.add(task)
    task.add_done_callback(_ABORTING.discard)


_ABORTING: set[asyncio.Future[Any]] = set()


def _stream_writer(connection: aiormq.abc.AbstractConnection) -> Optional[asyncio.StreamWriter]:
    task = getattr(connection, "_writer_task", None)
    try:
        frame = task.get_coro().cr_frame if task is not None else None
    except AttributeError:
        return None
    writer = frame.f_locals.get("writer") if frame is not None else None
    return writer if isinstance(writer, asyncio.StreamWriter) else None


class _Transports(aiormq.connection.TransportFactory):
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
        inner: aiormq.connection.TransportFactory
        if url.scheme == "amqps":
            inner = aiormq.connection.TLSTransportFactory()
        else:
            inner = aiormq.connection.TCPTransportFactory()
        reader, writer = await inner.create(url, **kwargs)
        self._opened[writer] = reader
        return reader, writer

    def sweep(self, everything: bool = False) -> None:
        for writer, reader in list(self._opened.items()):
            if writer.transport.is_closing():
                del self._opened[writer]
            elif everything or reader.at_eof():
                writer.transport.abort()
                del self._opened[writer]


class RobustConnection(aio_pika.RobustConnection):
    """aio-pika's reconnecting connection whose failed connection attempts leak no socket
    (see :class:`_Transports`), and which with *endpoints* connects to whichever node of a
    cluster answers (:mod:`kiwipy.rmq._endpoints`). What :func:`kiwipy.rmq.async_connect` uses by default, with
    a bound on each attempt (:data:`CONNECT_TIMEOUT`)."""

    def __init__(
        self,
        url: URL,
        loop: Optional[asyncio.AbstractEventLoop] = None,
        endpoints: Optional[_endpoints.Endpoints] = None,
        **kwargs: Any,
    ):
        super().__init__(url, loop=loop, **kwargs)
        self._transports = _Transports(endpoints)
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


async def guarded(
    channel: Any,
    operation: Awaitable[Any],
    timeout: Optional[float] = None,
) -> Any:
    """:returns: what *operation* (on *channel*: a publish awaiting its confirm, a declare)
    returns, waiting at most *timeout* seconds and never past the end of the connection.

    aiormq fails what is pending when a connection dies, but an operation that was waiting
    for the channel's lock at that moment goes on afterwards: it queues its frames for a
    writer that is gone and would wait for an answer forever. And when we are cancelled, the
    operation is left to finish (and cancelled only if its connection ends first): aiormq
    answers a cancelled call with ``channel.close``, and if the broker has just closed that
    channel itself (a passive declare of a missing queue does), the broker kills the whole
    connection for it (``504 CHANNEL_ERROR``).

    :raises ConnectionResetError: if the connection ended first (the outcome is unknown).
    :raises asyncio.TimeoutError: after *timeout* seconds.
    """
    task = asyncio.ensure_future(operation)
    ended = connection_ended(channel)
    try:
        await asyncio.wait((task, ended), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # we were cancelled
        _abandon(task, ended)
        raise
    if task.done():
        return task.result()
    task.cancel()  # the connection is gone, or the operation took too long
    task.add_done_callback(_retrieve)
    if ended.done():
        raise ConnectionResetError("the connection ended before the broker answered")
    raise asyncio.TimeoutError


def _abandon(task: asyncio.Future[Any], ended: asyncio.Future[Any]) -> None:
    task.add_done_callback(_retrieve)
    if not task.done():
        ended.add_done_callback(lambda _: task.cancel())


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a late outcome of an abandoned operation: nobody waits for it


#: Seconds one connection attempt may take: RabbitMQ's own handshake timeout. Without it an
#: attempt into a link that carries nothing would wait for TCP to give up (many minutes).
CONNECT_TIMEOUT = 10.0

#: Seconds :func:`bounded` waits.
CLOSE_TIMEOUT = 1.0


async def bounded(*awaitables: Awaitable[Any]) -> None:
    """Await *awaitables* (closings) for at most :data:`CLOSE_TIMEOUT` seconds, ignoring
    their errors: closing must finish even when the broker is gone.

    Those still running are left to finish, never cancelled: a cancelled ``channel.close``
    makes aiormq send a second ``channel.close``, and if the broker's ``close-ok`` was on its
    way (a busy broker can take more than a second), the broker kills the whole connection
    for it (``504 CHANNEL_ERROR - expected 'channel.open'``).
    """
    if not awaitables:
        return
    tasks = [asyncio.ensure_future(each) for each in awaitables]
    for task in tasks:
        task.add_done_callback(_retrieve)  # closing errors do not matter
    await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
