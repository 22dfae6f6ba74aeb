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

The behaviours built on aiormq's internals are here too, each with the reason and a
fallback: :func:`watch_consumers` (aiormq drops the broker's ``basic.cancel`` silently),
:func:`abort_connection` (aiormq cannot reset a link that stopped carrying traffic) and
:class:`RobustConnection` (aiormq leaks the socket of a handshake the broker hung up on, as a
starting or stopping broker does). The internals themselves are touched only in
:mod:`kiwipy.rmq.connection._aiormq_boundary`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from typing import Any, Callable, Optional

import aiormq.abc
from aiormq import exceptions as amqp_errors
from pamqp import commands as spec

from ... import _unroutable, exceptions
from . import _access
from ._aiormq_boundary import RobustConnection, abort_sockets, closed_by_broker
from ._aiormq_boundary import consumer_table as _consumer_table
from ._aiormq_boundary import replace_consumer_table as _replace_consumer_table

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
    "confirmed",
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


def translate(exc: BaseException, what: str, method: Optional[str] = None) -> exceptions.KiwiError:
    """:returns: the kiwipy error for the aiormq error *exc* raised while doing *what* (with
    the aiormq channel *method*, when known: it says which permission a refusal is about)."""
    refused = _access.refusal(exc, what, method)
    if refused is not None:
        return refused
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
    expiration: Optional[str] = None,
) -> spec.Basic.Properties:
    """:returns: AMQP properties as kiwipy 0.9 sets them (delivery mode 2 for tasks, 1
    otherwise); ``content_type`` is set only for encoders that have one (not YAML), and
    ``expiration`` only for a request with a deadline (:mod:`kiwipy._deadlines`)."""
    return spec.Basic.Properties(
        delivery_mode=2 if persistent else 1,
        correlation_id=correlation_id,
        reply_to=reply_to,
        content_type=content_type,
        headers=headers,
        priority=0,
        expiration=expiration,
    )


def is_channel_error(exc: Optional[BaseException]) -> bool:
    """:returns: whether *exc* closed only a channel (the broker's ``channel.close``), so the
    connection is still usable."""
    return closed_by_broker(exc)


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
    consumers = _consumer_table(channel)
    if consumers is not None:
        _replace_consumer_table(channel, _ConsumerTable(consumers, on_removed))
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


def abort_connection(owner: Any, connection: aiormq.abc.AbstractConnection, reason: str) -> None:
    """Reset *connection*'s socket now, so aiormq fails it and aio-pika reconnects.

    A graceful ``close()`` would send ``connection.close`` into a link that carries nothing
    and could wait for the socket to flush forever; aiormq itself never closes the socket of
    a connection it finds stuck (it leaks it). The socket is the one :class:`RobustConnection`
    recorded when it opened it for *owner* (the aio-pika connection whose live aiormq
    connection is *connection*); with another connection class it is unknown, so the
    connection is closed normally.
    """
    if abort_sockets(owner):
        return
    _LOGGER.debug("no socket of %s known; closing it instead", connection)
    task = asyncio.ensure_future(connection.close(ConnectionResetError(reason)))
    _ABORTING.add(task)
    task.add_done_callback(_ABORTING.discard)


_ABORTING: set[asyncio.Future[Any]] = set()


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


def confirmed(confirm: asyncio.Future[Any], timeout: float) -> asyncio.Future[Any]:
    """:returns: a future with the outcome of *confirm* (the confirm future of a publish
    written directly, :mod:`kiwipy.rmq.send._fastpublish`), failed with
    ``asyncio.TimeoutError`` after *timeout* seconds.

    :func:`guarded` is not needed for it: aiormq fails such a future itself when its channel
    or connection closes, and nothing waits for a lock. Its cost does not grow with the
    number of publishes in flight (:func:`guarded` adds a callback to the connection's
    ``closing`` future and removes it again, a scan of every other waiter's). Cancelling the
    returned future leaves *confirm* to finish, as :func:`guarded` leaves its operation.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[Any] = loop.create_future()
    timer = loop.call_later(timeout, _expire, outcome)

    def settle(done: asyncio.Future[Any]) -> None:
        timer.cancel()
        error = None if done.cancelled() else done.exception()  # retrieved, even if unused
        if outcome.done():
            return
        if done.cancelled():
            outcome.cancel()
        elif type(error) is Exception:  # aiormq's for a channel closed without an error
            outcome.set_exception(ConnectionResetError("the channel closed before the confirm"))
        elif error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(done.result())

    confirm.add_done_callback(settle)
    return outcome


def _expire(outcome: asyncio.Future[Any]) -> None:
    if not outcome.done():
        outcome.set_exception(asyncio.TimeoutError())


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
