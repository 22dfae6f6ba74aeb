"""The asyncio RabbitMQ communicator, :class:`RmqCommunicator`, and :func:`async_connect`.

One communicator = one aio-pika connection (which it owns and closes), one
:class:`~kiwipy.rmq._session.Session` over it, one reply queue shared by every sender, and
components created on first use: the message publisher and subscriber
(:mod:`kiwipy.rmq.messages`), the default task queue and any named task queues
(:mod:`kiwipy.rmq.tasks`). Each component re-declares and re-consumes what it owns after
aio-pika reconnects, so subscribers keep receiving without the user doing anything; connection
state changes are observable with :meth:`RmqCommunicator.add_connection_callback`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Callable, Optional, TypeVar, cast

import aio_pika
from typing_extensions import Unpack
from yarl import URL

from .. import _broadcasts, _limits, exceptions
from .._outcome import DeferredClose
from ..communications import (
    AsyncCommunicator,
    BroadcastSubscriber,
    RpcSubscriber,
    TaskSubscriber,
)
from . import _aiormq_boundary, _amqp, _connecting
from ._batch import MessageTarget, TaskTarget
from ._endpoints import Endpoints
from ._lane import MessageLane, TaskLane
from ._options import (
    ConnectionFactory,
    ConnectionParams,
    RmqOptions,
    check_url_query,
    endpoint_urls,
    resolve_options,
)
from ._recovery import ReconnectPacing
from ._replies import ReplyQueue
from ._session import Session
from .messages import RmqPublisher, RmqSubscriber
from .tasks import RmqTaskQueue

__all__ = (
    "EXCHANGE_PROPERTIES",
    "RmqCommunicator",
    "RmqPublisher",
    "RmqSubscriber",
    "async_connect",
)

#: kiwipy 0.9's declare arguments of both exchanges (kept for code that reads them; the
#: declarations themselves are made in :mod:`kiwipy.rmq._amqp`, which adds ``durable=False``).
EXCHANGE_PROPERTIES: dict[str, Any] = {"type": aio_pika.ExchangeType.TOPIC}

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

#: aio-pika's default ``reconnect_interval``.
_AIO_PIKA_INTERVAL = 5.0
#: Seconds ``disconnect`` gives the components to stop cleanly before closing anyway (with
#: the session's own bounded close, it stays under the thread facade's 5 s call timeout).
_CLOSE_BUDGET = 2.0


class RmqCommunicator(AsyncCommunicator):
    """An asyncio communicator over RabbitMQ, wire-compatible with kiwipy 0.9.

    It takes ownership of *connection*: :meth:`disconnect` closes it.

    :param connection: an aio-pika connection (connected or not), e.g. from
        :func:`aio_pika.connect_robust`, which reconnects by itself.
    :param options: see :class:`~kiwipy.rmq._options.RmqOptions` (kiwipy 0.9's
        ``message_exchange``, ``queue_expires``, ``task_exchange``, ``task_queue``,
        ``task_prefetch_size``, ``task_prefetch_count``, ``encoder``, ``decoder``,
        ``testing_mode`` and this library's additions).
    :raises TypeError: for an unknown option.
    """

    def __init__(self, connection: Any, **options: Unpack[RmqOptions]) -> None:
        self._options = resolve_options(options)
        _limits.check_options(self._options)
        self._connection = connection
        self._session = Session(connection, self._options, owns_connection=True)
        self._replies = ReplyQueue(self._session, self._options["message_exchange"])
        self._lazy: dict[str, asyncio.Future[Any]] = {}
        self._task_queues: list[RmqTaskQueue] = []
        self._closed = False
        self._deferred_close = DeferredClose()
        self._broadcast_tally = _broadcasts.Tally()

    def __str__(self) -> str:
        return f"RmqCommunicator({self._connection})"

    @property
    def server_properties(self) -> dict[str, Any]:
        """The broker's ``connection.start`` properties (product, version, platform, ...);
        ``{}`` while not connected."""
        transport = self._connection.transport
        if transport is None:
            return {}
        return dict(transport.connection.server_properties)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop driving the connection."""
        return _aiormq_boundary.event_loop(self._connection)

    def add_close_callback(self, callback: Callable[..., Any], weak: bool = False) -> None:
        """Call ``callback(connection, exc)`` every time the connection closes.

        :param weak: keep only a weak reference to *callback*.
        """
        self._connection.close_callbacks.add(callback, weak)

    def add_connection_callback(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(event)`` on every connection state change, on the communicator's
        loop (keep it short). *event* is a :class:`str` equal to one of ``'connected'``,
        ``'disconnected'`` (once per outage), ``'stalled'`` (the broker stopped answering;
        the connection is reset), ``'reconnected'`` (everything restored), ``'lost'`` (not
        back within ``recovery_timeout``: waiting replies failed, sends raise; reconnection
        goes on), ``'consumer-cancelled'`` (the broker cancelled a consumer; it is being
        restored), ``'restore-failed'`` (retried with backoff), ``'subscriber-lost'`` (an RPC
        subscriber whose identifier another communicator took while we were away was
        removed) and ``'closed'``; its ``detail`` attribute says more. Each event is also
        logged once on the ``kiwipy.rmq.communicator`` logger (see docs/guarantees.md)."""
        self._session.add_listener(callback)

    @property
    def pending_replies(self) -> int:
        """How many replies (RPC and task) this communicator is waiting for."""
        return self._replies.waiting

    # Life cycle

    def connected(self) -> bool:
        """Whether the connection is up now (false during an outage and after close)."""
        return not self._closed and self._session.is_connected

    async def connect(self) -> None:
        """Connect if needed. :raises CommunicatorClosed: after :meth:`disconnect`."""
        self._ensure_open()
        await self._session.start()

    async def disconnect(self) -> None:
        """Stop consuming, fail waiting replies with :class:`~kiwipy.CommunicatorClosed`,
        delete this communicator's own queues and close the connection. Idempotent, and
        bounded in time even when the broker is gone. Called by one of this communicator's
        subscribers, it returns at once and the close completes after that call's reply."""
        if self._closed:
            await self._deferred_close.wait()
            return
        self._closed = True
        self._replies.fail_all(exceptions.CommunicatorClosed())
        if not self._deferred_close.start(self._close):
            await self._close()

    async def _close(self) -> None:
        await asyncio.sleep(0)  # let the failed futures' callbacks run
        self._session.begin_close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop_components(), _CLOSE_BUDGET)
        await self._session.close()

    async def _stop_components(self) -> None:
        components = [f.result() for f in self._lazy.values() if f.done() and not f.exception()]
        for component in components + list(self._task_queues):
            if isinstance(component, RmqPublisher):
                continue  # its only state is the shared reply queue, closed below
            try:
                await component.disconnect()
            except exceptions.KiwiError as exc:
                _LOGGER.debug("while disconnecting %r: %s", component, exc)
        await self._replies.close()

    def _ensure_open(self) -> None:
        if self._closed:
            raise exceptions.CommunicatorClosed

    async def _get(self, name: str, make: Callable[[], Awaitable[T]]) -> T:
        """:returns: the component *name*, made (once, even with concurrent callers) by
        *make*; a failed attempt is retried by the next call."""
        self._ensure_open()
        future = self._lazy.get(name)
        if future is None or (future.done() and future.exception() is not None):
            future = self._lazy[name] = asyncio.ensure_future(make())
        if not future.done():
            await asyncio.shield(future)
        return cast(T, future.result())

    async def get_message_publisher(self) -> RmqPublisher:
        """:returns: the RPC/broadcast publisher, created on first use."""

        async def make() -> RmqPublisher:
            publisher = RmqPublisher(
                self._session, self._options["message_exchange"], replies=self._replies
            )
            await publisher.connect()
            return publisher

        return await self._get("publisher", make)

    async def get_message_subscriber(self) -> RmqSubscriber:
        """:returns: the RPC/broadcast subscriber, created on first use."""

        async def make() -> RmqSubscriber:
            subscriber = RmqSubscriber(
                self._session,
                self._options["message_exchange"],
                self._options["queue_expires"],
                owner=self,
                tally=self._broadcast_tally,
            )
            await subscriber.connect()
            return subscriber

        return await self._get("subscriber", make)

    async def get_default_task_queue(self) -> RmqTaskQueue:
        """:returns: the task queue named by the ``task_queue`` option, declared on first use."""
        options = self._options

        async def make() -> RmqTaskQueue:
            return await self._make_task_queue(
                options["task_queue"], options["task_prefetch_size"], options["task_prefetch_count"]
            )

        return await self._get("tasks", make)

    async def _make_task_queue(
        self, queue_name: str, prefetch_size: int, prefetch_count: int
    ) -> RmqTaskQueue:
        queue = RmqTaskQueue(
            self._session,
            self._options["task_exchange"],
            queue_name,
            prefetch_size=prefetch_size,
            prefetch_count=prefetch_count,
            owner=self,
            replies=self._replies,
        )
        await queue.connect()
        return queue

    # Subscribers

    async def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> Any:
        return await (await self.get_message_subscriber()).add_rpc_subscriber(
            subscriber, identifier
        )

    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        await (await self.get_message_subscriber()).remove_rpc_subscriber(identifier)

    async def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> Any:
        return await (await self.get_message_subscriber()).add_broadcast_subscriber(
            subscriber, identifier
        )

    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        await (await self.get_message_subscriber()).remove_broadcast_subscriber(identifier)

    async def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        queue = await self.get_default_task_queue()
        return await queue.add_task_subscriber(subscriber, identifier)

    async def remove_task_subscriber(self, identifier: Any) -> None:
        await (await self.get_default_task_queue()).remove_task_subscriber(identifier)

    # Sending

    async def rpc_send(
        self, recipient_id: Any, msg: Any, *, timeout: Optional[float] = None
    ) -> asyncio.Future[Any]:
        """:param timeout: seconds the reply may take (see
            :meth:`kiwipy.rmq.messages.RmqPublisher.rpc_send`).
        :raises UnroutableError: if nobody holds *recipient_id*."""
        publisher = await self.get_message_publisher()
        return await publisher.rpc_send(recipient_id, msg, timeout=timeout)

    async def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> Any:
        """:returns: the broker's confirm (``pamqp.commands.Basic.Ack``, truthy)."""
        publisher = await self.get_message_publisher()
        return await publisher.broadcast_send(body, sender, subject, correlation_id)

    async def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[asyncio.Future[Any]]:
        """Queue *task* on the default task queue (declared if missing); *timeout*: see
        :meth:`kiwipy.rmq.RmqTaskPublisher.task_send`.

        Channel and connection failures raise :class:`~kiwipy.ConnectionLost`, not
        :class:`~kiwipy.TaskRejected` as in kiwipy 0.9 (bug B7).
        """
        queue = await self.get_default_task_queue()
        return await queue.task_send(task, no_reply, timeout=timeout)

    async def task_send_many(
        self,
        tasks: Iterable[Any],
        no_reply: bool = False,
        *,
        timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> list[Optional[asyncio.Future[Any]]]:
        """Queue *tasks* on the default task queue with many publishes in flight (see
        :meth:`kiwipy.communications.AsyncCommunicator.task_send_many`).

        :raises BatchSendError: if any task was not confirmed.
        """
        queue = await self.get_default_task_queue()
        return await queue.task_send_many(
            tasks, no_reply, timeout=timeout, call_timeout=call_timeout
        )

    async def rpc_send_many(
        self,
        calls: Iterable[tuple[Any, Any]],
        *,
        timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> list[asyncio.Future[Any]]:
        """Send many RPCs with their publishes in flight together (see
        :meth:`kiwipy.communications.AsyncCommunicator.rpc_send_many`).

        :raises BatchSendError: if any call failed (nobody holds its recipient, or the batch
            stopped).
        """
        publisher = await self.get_message_publisher()
        return await publisher.rpc_send_many(calls, timeout=timeout, call_timeout=call_timeout)

    async def broadcast_send_many(
        self, broadcasts: Iterable[tuple[Any, ...]], *, timeout: Optional[float] = None
    ) -> None:
        """Send many broadcasts with their publishes in flight together (see
        :meth:`kiwipy.communications.AsyncCommunicator.broadcast_send_many`).

        :raises BatchSendError: if any broadcast was not confirmed (the batch stopped).
        """
        publisher = await self.get_message_publisher()
        await publisher.broadcast_send_many(broadcasts, timeout=timeout)

    def task_lane(self) -> TaskLane:
        """:returns: the thread facade's quick way to send tasks to the default queue
        (:mod:`kiwipy.rmq._lane`)."""
        return TaskLane(self._default_task_target)

    def broadcast_tally(self) -> _broadcasts.Tally:
        """:returns: the count of this communicator's broadcast handlers, started as the
        deliveries arrive and finished once every subscriber was called: the thread facade
        waits on it after a blocking ``broadcast_send`` (docs/guarantees.md)."""
        return self._broadcast_tally

    def message_lane(self) -> MessageLane:
        """:returns: the thread facade's quick way to send RPCs and broadcasts."""
        return MessageLane(self._message_target)

    def _message_target(self) -> Optional[MessageTarget]:
        future = self._lazy.get("publisher")
        if self._closed or future is None or not future.done() or future.exception():
            return None
        publisher: RmqPublisher = future.result()
        target: MessageTarget = publisher.target()
        return target

    def _default_task_target(self) -> Optional[TaskTarget]:
        future = self._lazy.get("tasks")
        if self._closed or future is None or not future.done() or future.exception():
            return None
        queue: RmqTaskQueue = future.result()
        return queue.target()

    async def task_queue(
        self, queue_name: str, prefetch_size: int = 0, prefetch_count: int = 0
    ) -> RmqTaskQueue:
        """:returns: a new handle on the task queue *queue_name* (declared if missing).

        :raises InvalidName: if *queue_name* breaks the naming rules (:mod:`kiwipy._limits`).
        """
        self._ensure_open()
        _limits.task_queue_name(queue_name)
        queue = await self._make_task_queue(queue_name, prefetch_size, prefetch_count)
        self._task_queues.append(queue)
        return queue


async def _open_connection(params: ConnectionParams, factory: ConnectionFactory) -> Any:
    """:returns: ``factory(**params)`` for a dict, ``factory(params)`` for a URL string."""
    params = params or {}
    if isinstance(params, Mapping):
        return await factory(**params)
    return await factory(params)


def _one_url(params: ConnectionParams, urls: list[str]) -> ConnectionParams:
    """:returns: *params* with one URL for aio-pika: the first endpoint's (the endpoint of
    each attempt is chosen later: :mod:`kiwipy.rmq._endpoints`)."""
    if not urls:
        return params
    if isinstance(params, Mapping):
        return {**params, "url": urls[0]}
    return urls[0]


def _paced(params: ConnectionParams, options: dict[str, Any]) -> ConnectionParams:
    """:returns: *params* for :func:`aio_pika.connect_robust` with a first
    ``reconnect_interval`` of 0.1 s, unless the user chose one.

    aio-pika sleeps ``reconnect_interval`` after *every* successful connection before it
    watches for the next loss, so without this a connection lost in its first 5 s would be
    retried only 5 s after it was made. The session then paces the attempts of an outage up
    to ``reconnect_max_interval`` (:class:`~kiwipy.rmq._recovery.ReconnectPacing`).
    """
    first = ReconnectPacing.FIRST
    if isinstance(params, Mapping):
        url = params.get("url")
        if "reconnect_interval" in params or "reconnect_interval" in URL(url or "").query:
            return params
        options.setdefault("reconnect_max_interval", _AIO_PIKA_INTERVAL)
        return {**params, "reconnect_interval": first}
    url = URL(str(params or "amqp://guest:guest@localhost/"))  # one URL: see _one_url
    if "reconnect_interval" in url.query:
        return params
    options.setdefault("reconnect_max_interval", _AIO_PIKA_INTERVAL)
    return str(url.update_query(reconnect_interval=str(first)))


async def async_connect(
    connection_params: ConnectionParams = None,
    connection_factory: ConnectionFactory = aio_pika.connect_robust,
    **options: Unpack[RmqOptions],
) -> RmqCommunicator:
    """Open a connection and return a connected :class:`RmqCommunicator`.

    :param connection_params: a URL (``'amqp://guest:guest@127.0.0.1/?heartbeat=30'``) or
        keyword arguments for *connection_factory* (``{'url': ...}``). The nodes of a
        cluster may be given as several hosts in one URL
        (``'amqp://u:p@host1:5672,host2:5673/vhost'``) or as a list of URLs: each connection
        attempt goes to one of them (``shuffle_endpoints``; docs/cluster.md).
    :param connection_factory: makes the aio-pika connection; the default,
        :func:`aio_pika.connect_robust`, reconnects by itself after the connection is lost
        (with a quick first ``reconnect_interval`` unless the URL sets one, each attempt
        bounded by :data:`~kiwipy.rmq._amqp.CONNECT_TIMEOUT`, and no socket leaked by a
        failed attempt: :class:`~kiwipy.rmq._amqp.RobustConnection`).
    :param options: see :class:`RmqCommunicator`.
    :raises ValueError: for a bad option, a bad endpoint, or (with the default factory) a URL
        query parameter that is unknown or malformed (``?heartbeat=abc``).
    :raises ConnectFailed: if the connection cannot be opened; the message says why.
        :class:`~kiwipy.AccessRefused` when the broker refused the user or the virtual host,
        :class:`~kiwipy.TlsError` when the TLS handshake failed (untrusted certificate,
        wrong host name).
    """
    resolved = resolve_options(options)
    _limits.check_options(resolved)  # fail on a bad option before connecting
    asked = connection_params  # for error messages: before the pacing below adds to it
    urls = endpoint_urls(connection_params)
    if connection_factory is aio_pika.connect_robust:
        check_url_query(connection_params)  # aiormq would ignore a bad one silently
        connection_params = _one_url(connection_params, urls)
        connection_params = _paced(connection_params, cast(dict[str, Any], options))
        endpoints = None
        if len(urls) > 1:
            shuffle = resolved["shuffle_endpoints"]
            endpoints = Endpoints(urls, shuffle, _amqp.CONNECT_TIMEOUT)
        connection_factory = functools.partial(
            aio_pika.connect_robust,
            connection_class=cast(
                type[_amqp.RobustConnection],
                functools.partial(_amqp.RobustConnection, endpoints=endpoints),
            ),
            timeout=_amqp.CONNECT_TIMEOUT,
        )
    elif len(urls) > 1:
        raise ValueError(
            "several endpoints need the default connection factory (aio_pika.connect_robust)"
        )
    else:
        connection_params = _one_url(connection_params, urls)
    connection = await _connecting.opening(
        asked, _open_connection(connection_params, connection_factory)
    )
    communicator = RmqCommunicator(connection, **options)
    await communicator.connect()
    return communicator
