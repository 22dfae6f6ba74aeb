"""The asyncio RabbitMQ communicator, :class:`RmqCommunicator`, and :func:`async_connect`.

One communicator = one aio-pika connection (which it owns and closes), one
:class:`~kiwipy.rmq.connection._session.Session` over it, one reply queue shared by every sender, and
components created on first use (:mod:`kiwipy.rmq._components`): the message publisher and
subscriber (:mod:`kiwipy.rmq.messages`), the default task queue and any named task queues
(:mod:`kiwipy.rmq.tasks`). :func:`async_connect` opens the connection with
:mod:`kiwipy.rmq.connection._opening`. Each component re-declares and re-consumes what it owns after
aio-pika reconnects, so subscribers keep receiving without the user doing anything; connection
state changes are observable with :meth:`RmqCommunicator.add_connection_callback`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any, Callable, Optional, cast

import aio_pika
from typing_extensions import Unpack

from .. import _broadcasts, _limits, exceptions
from .._outcome import DeferredClose
from ..communications import (
    AsyncCommunicator,
    BroadcastSubscriber,
    RpcSubscriber,
    TaskSubscriber,
)
from ._components import Components
from ._options import (
    ConnectionFactory,
    ConnectionParams,
    RmqOptions,
    resolve_options,
)
from .connection import _aiormq_boundary
from .connection._opening import open_connection
from .connection._session import Session
from .messages import RmqPublisher, RmqSubscriber
from .receive._replies import ReplyQueue
from .send._lane import MessageLane, TaskLane
from .tasks import RmqTaskQueue

__all__ = (
    "EXCHANGE_PROPERTIES",
    "RmqCommunicator",
    "RmqPublisher",
    "RmqSubscriber",
    "async_connect",
)

#: kiwipy 0.9's declare arguments of both exchanges (kept for code that reads them; the
#: declarations themselves are made in :mod:`kiwipy.rmq.connection._amqp`, which adds ``durable=False``).
EXCHANGE_PROPERTIES: dict[str, Any] = {"type": aio_pika.ExchangeType.TOPIC}

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
        self._broadcast_tally = _broadcasts.Tally()
        self._components = Components(
            self._session, self._options, self._replies, self, self._broadcast_tally
        )
        self._closed = False
        self._deferred_close = DeferredClose()

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
        self._closed = self._components.closed = True
        self._replies.fail_all(exceptions.CommunicatorClosed())
        if not self._deferred_close.start(self._close):
            await self._close()

    async def _close(self) -> None:
        await asyncio.sleep(0)  # let the failed futures' callbacks run
        self._session.begin_close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._components.stop(), _CLOSE_BUDGET)
        await self._session.close()

    def _ensure_open(self) -> None:
        self._components.ensure_open()

    async def get_message_publisher(self) -> RmqPublisher:
        """:returns: the RPC/broadcast publisher, created on first use."""
        return await self._components.message_publisher()

    async def get_message_subscriber(self) -> RmqSubscriber:
        """:returns: the RPC/broadcast subscriber, created on first use."""
        return await self._components.message_subscriber()

    async def get_default_task_queue(self) -> RmqTaskQueue:
        """:returns: the task queue named by the ``task_queue`` option, declared on first use."""
        return await self._components.default_task_queue()

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
        (:mod:`kiwipy.rmq.send._lane`)."""
        return TaskLane(self._components.default_task_target)

    def broadcast_tally(self) -> _broadcasts.Tally:
        """:returns: the count of this communicator's broadcast handlers, started as the
        deliveries arrive and finished once every subscriber was called: the thread facade
        waits on it after a blocking ``broadcast_send`` (docs/guarantees.md)."""
        return self._broadcast_tally

    def message_lane(self) -> MessageLane:
        """:returns: the thread facade's quick way to send RPCs and broadcasts."""
        return MessageLane(self._components.message_target)

    async def task_queue(
        self, queue_name: str, prefetch_size: int = 0, prefetch_count: int = 0
    ) -> RmqTaskQueue:
        """:returns: a new handle on the task queue *queue_name* (declared if missing).

        :raises InvalidName: if *queue_name* breaks the naming rules (:mod:`kiwipy._limits`).
        """
        self._ensure_open()
        _limits.task_queue_name(queue_name)
        return await self._components.task_queue(queue_name, prefetch_size, prefetch_count)


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
        bounded by :data:`~kiwipy.rmq.connection._amqp.CONNECT_TIMEOUT`, and no socket leaked by a
        failed attempt: :class:`~kiwipy.rmq.connection._amqp.RobustConnection`).
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
    connection = await open_connection(
        connection_params, connection_factory, cast(dict[str, Any], options), resolved
    )
    communicator = RmqCommunicator(connection, **options)
    await communicator.connect()
    return communicator
