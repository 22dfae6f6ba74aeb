"""``AsyncBrokerCommunicator``: the asyncio communicator every embedded transport shares.

It is written once against a :class:`~kiwipy.core.Broker` (the in-process and the SQLite
transports each supply one), from parts that each do one thing (those that call back into
it name it by a small protocol of what they use): :mod:`kiwipy.core._codec` (encoding,
decoding and tracing of bodies), :mod:`kiwipy.core._sending` (tasks, RPCs, broadcasts and
replies sent; the replies waited for), :mod:`kiwipy.core._rpc` (RPC subscribers and the
calls they handle), :mod:`kiwipy.core._receiving` (broadcast subscribers),
:mod:`kiwipy.core._jobs` (the asyncio tasks subscribers run in) and
:mod:`kiwipy.core._tasks` (task queues and pull-mode tasks).
Reply shapes and waiting are in :mod:`kiwipy._replies`, shared with the RabbitMQ transport.

Invariants:

* The core's state is only touched on its own loop: the broker posts everything it delivers
  there with ``call_soon_threadsafe``, and subscribers run there as jobs.
* Every message body goes through :meth:`Codec.encode <kiwipy.core._codec.Codec.encode>`
  when sent and :meth:`~kiwipy.core._codec.Codec.decode` when received, so with an encoder
  nothing crosses the broker that could not cross RabbitMQ.
* Closing lets RPC calls being handled answer (for up to a second), then cancels the running
  jobs; the broker has already put their tasks back in the queues, so a closed communicator
  never replies to or acks a task afterwards.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Optional

from .. import _broadcasts, _deadlines, _limits, _tracing, encoders, exceptions
from .._outcome import DeferredClose
from ..communications import (
    AsyncCommunicator,
    BroadcastSubscriber,
    RpcSubscriber,
    TaskSubscriber,
)
from ._broker import Broker, Connection
from ._codec import Codec
from ._jobs import Jobs
from ._receiving import BroadcastReceiver
from ._rpc import RpcServer
from ._sending import Sender
from ._tasks import BrokerIncomingTask, BrokerTaskQueue

__all__ = ("DEFAULT_TASK_QUEUE", "AsyncBrokerCommunicator")

DEFAULT_TASK_QUEUE = "kiwipy.tasks"


class AsyncBrokerCommunicator(AsyncCommunicator):
    """The asyncio communicator over a :class:`~kiwipy.core.Broker`.

    Subscribers are called with this communicator as first argument; they may be functions,
    coroutine functions or objects with an ``async def __call__``.

    :param broker: the broker to connect to.
    :param options: the options a transport checked (``encoder``, ``decoder``,
        ``task_queue``, ``task_prefetch_count``, ``max_message_size``).
    """

    #: The messaging system named in traces and metrics (:mod:`kiwipy._tracing`).
    system: ClassVar[str] = _tracing.MEMORY

    def __init__(self, broker: Broker, options: Mapping[str, Any]) -> None:
        encoder, decoder = options.get("encoder"), options.get("decoder")
        resolved = (
            None if encoder is None and decoder is None else encoders.resolve(encoder, decoder)
        )
        self._broker = broker
        _limits.check_options(options)
        self._default_queue = options.get("task_queue", DEFAULT_TASK_QUEUE)
        self._prefetch_count = options.get("task_prefetch_count", 0)
        max_size = options.get("max_message_size", _limits.DEFAULT_MAX_MESSAGE_SIZE)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._connection: Optional[Connection] = None
        self._closed = False
        self._codec = Codec(resolved, max_size, self.system)
        self._sender = Sender(broker, self._codec, lambda: self.loop.create_future())
        _tracing.count_replies(self, self.system, _waiting_count)
        self._jobs = Jobs(lambda: self.loop)
        self._rpc = RpcServer(self, broker, self._codec, self._sender, self._jobs)
        self._broadcasts = BroadcastReceiver(self, self._codec, self._jobs)
        self._queues: dict[str, BrokerTaskQueue] = {}
        self._deferred_close = DeferredClose()
        self._held: set[BrokerIncomingTask] = set()  # pull-mode tasks being processed

    @property
    def broker(self) -> Broker:
        """The broker this communicator is connected to."""
        return self._broker

    @property
    def encoder(self) -> Optional[encoders.Encoder]:
        """The encoder every message goes through, or ``None`` (passed by reference)."""
        return self._codec.encoder

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the communicator is not connected yet")
        return self._loop

    async def connect(self) -> None:
        """Connect to the broker on the running loop (once).

        :raises CommunicatorClosed: after :meth:`disconnect`.
        """
        if self._closed:
            raise exceptions.CommunicatorClosed
        if self._connection is None:
            self._loop = asyncio.get_running_loop()
            on_reply, on_broadcast = self._sender.on_reply, self._broadcasts.on_broadcast
            self._connection = self._broker.connect(self._loop, on_reply, on_broadcast)
            self._connection.direct_broadcast = self._broadcasts.on_broadcast_direct

    def connected(self) -> bool:
        return not self._closed and self._connection is not None and not self._connection.closed

    async def disconnect(self) -> None:
        """Close: tasks in progress go back to their queues for other workers, RPC identities
        are released, RPC calls already being handled get up to a second to answer (as on
        RabbitMQ), and futures still waiting for a reply fail with
        :class:`~kiwipy.CommunicatorClosed`. Called by one of this communicator's
        subscribers, it returns at once and completes after that call's reply. Calling it
        again does nothing."""
        if self._closed:
            await self._deferred_close.wait()
            return
        self._closed = True
        if self._connection is not None:
            self._broker.close(self._connection)
        self._sender.fail_all(exceptions.CommunicatorClosed())
        if not self._deferred_close.start(self._stop_jobs):
            await self._stop_jobs()

    async def _stop_jobs(self) -> None:
        current = asyncio.current_task()
        await self._rpc.drain(current)
        await self._jobs.cancel(current)
        self._held.clear()

    # Subscribers

    async def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> Any:
        """RPC identifiers are unique across the whole broker and compared as strings (a
        ``uuid.UUID`` reaches the subscriber registered with its ``str``), as on RabbitMQ.

        :raises DuplicateSubscriberIdentifier: if any communicator holds the identifier.
        :raises InvalidName: if the identifier breaks the naming rules (``kiwipy._limits``).
        """
        return self._rpc.add(self._open(), subscriber, identifier)

    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        self._rpc.remove(self._open(), identifier)

    async def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        return await self._task_queue(self._default_queue).add_task_subscriber(
            subscriber, identifier
        )

    async def remove_task_subscriber(self, identifier: Any) -> None:
        await self._task_queue(self._default_queue).remove_task_subscriber(identifier)

    async def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> Any:
        self._open()
        return self._broadcasts.add(subscriber, identifier)

    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        self._open()
        self._broadcasts.remove(identifier)

    async def task_queue(
        self, queue_name: str, prefetch_size: int = 0, prefetch_count: int = 0
    ) -> BrokerTaskQueue:
        """:returns: the task queue *queue_name* (``prefetch_size`` is ignored).

        :raises InvalidName: if *queue_name* breaks the naming rules (``kiwipy._limits``).
        """
        self._open()
        return self._task_queue(_limits.task_queue_name(queue_name), prefetch_count)

    # Sending

    async def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[asyncio.Future[Any]]:
        """Queue *task* on the default task queue; it waits there until a worker takes it.

        :param timeout: seconds the task may take to finish (see :mod:`kiwipy._deadlines`).
        :raises EncodeError: if the task cannot be encoded (nothing is sent).
        """
        return self._send_task(self._default_queue, task, no_reply, timeout)

    def task_send_now(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[concurrent.futures.Future[Any]]:
        """:meth:`task_send` from any thread, the thread facade's: the broker stores the task
        on the caller's thread, and the future is a thread-world one (:mod:`._sending`)."""
        return self._send_task_now(self._default_queue, task, no_reply, timeout)

    async def task_send_many(
        self,
        tasks: Iterable[Any],
        no_reply: bool = False,
        *,
        timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> list[Optional[asyncio.Future[Any]]]:
        """Queue *tasks* on the default task queue (see
        :meth:`kiwipy.Communicator.task_send_many`): all are encoded first, so one that
        cannot be raises :class:`~kiwipy.EncodeError` before any is queued; the broker stores
        them all or none (*timeout* is accepted for the interface).
        """
        call_timeout = _deadlines.check_timeout(call_timeout)
        connection = self._open()
        payloads = [self._codec.encode((task, no_reply)) for task in tasks]
        queue = self._default_queue
        return self._sender.publish_tasks(queue, payloads, no_reply, connection, call_timeout)

    async def rpc_send(
        self, recipient_id: Any, msg: Any, *, timeout: Optional[float] = None
    ) -> asyncio.Future[Any]:
        """:param timeout: seconds the reply may take (see :mod:`kiwipy._deadlines`).
        :raises UnroutableError: if nobody holds *recipient_id*.
        :raises InvalidName: if *recipient_id* breaks the naming rules (``kiwipy._limits``).
        :raises EncodeError: if *msg* cannot be encoded."""
        timeout = _deadlines.check_timeout(timeout)
        connection = self._open()
        key = _limits.rpc_identifier(recipient_id)
        return self._sender.send_rpc(key, self._codec.encode(msg), connection, timeout)

    def rpc_send_now(
        self, recipient_id: Any, msg: Any, *, timeout: Optional[float] = None
    ) -> concurrent.futures.Future[Any]:
        """:meth:`rpc_send` from any thread, the thread facade's (:mod:`._sending`)."""
        timeout = _deadlines.check_timeout(timeout)
        connection = self._open()
        key = _limits.rpc_identifier(recipient_id)
        return self._sender.send_rpc_now(key, self._codec.encode(msg), connection, timeout)

    async def rpc_send_many(
        self,
        calls: Iterable[tuple[Any, Any]],
        *,
        timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> list[asyncio.Future[Any]]:
        """Make the ``(recipient_id, msg)`` *calls* (see
        :meth:`kiwipy.Communicator.rpc_send_many`): all are encoded first, so one that
        cannot be raises :class:`~kiwipy.EncodeError` before any is sent; a call nobody
        holds the recipient of fails alone (:class:`~kiwipy.BatchSendError` at the end).
        """
        call_timeout = _deadlines.check_timeout(call_timeout)
        connection = self._open()
        requests = [
            (_limits.rpc_identifier(recipient_id), self._codec.encode(msg))
            for recipient_id, msg in calls
        ]
        return self._sender.send_rpcs(requests, connection, call_timeout)

    def broadcast_tally(self) -> _broadcasts.Tally:
        """:returns: the count of this communicator's broadcast handlers (one per subscriber
        and broadcast), started as the broadcasts arrive: the thread facade waits on it after
        a blocking ``broadcast_send`` (docs/guarantees.md)."""
        return self._broadcasts.tally

    async def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        """:returns: ``True`` (not an error when nobody listens).
        :raises EncodeError: if the broadcast cannot be encoded."""
        return self.broadcast_now(body, sender, subject, correlation_id)

    def broadcast_now(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        """:meth:`broadcast_send` from any thread: the broker takes it on the caller's thread.
        The thread facade sends this way when its own subscribers take broadcasts on the
        broker's thread too (:func:`kiwipy._broadcasts.hand_over`), so they are counted
        before this returns."""
        self._open()
        envelope = _broadcasts.envelope(body, sender, subject, correlation_id)
        self._sender.broadcast(self._codec.encode(envelope))
        return True

    async def broadcast_send_many(
        self, broadcasts: Iterable[tuple[Any, ...]], *, timeout: Optional[float] = None
    ) -> None:
        """Send the *broadcasts* (see :meth:`kiwipy.Communicator.broadcast_send_many`): all
        are checked and encoded first, so a malformed one (:class:`TypeError`) or one that
        cannot be encoded (:class:`~kiwipy.EncodeError`) raises before any is sent; handing
        them to the broker cannot fail."""
        self._open()
        arguments = [_broadcasts.batch_arguments(item) for item in broadcasts]
        payloads = [self._codec.encode(_broadcasts.envelope(*each)) for each in arguments]
        for payload in payloads:
            self._sender.broadcast(payload)

    # The task queues' host (kiwipy.core._tasks.TaskHost; package-private)

    def _open(self) -> Connection:
        if self._closed or (self._connection is not None and self._connection.closed):
            raise exceptions.CommunicatorClosed
        if self._connection is None:
            raise RuntimeError("the communicator is not connected: await connect() first")
        return self._connection

    def _task_queue(self, name: str, prefetch_count: Optional[int] = None) -> BrokerTaskQueue:
        queue = self._queues.get(name)
        if queue is None:
            if prefetch_count is None or (name == self._default_queue and not prefetch_count):
                prefetch_count = self._prefetch_count
            queue = self._queues[name] = BrokerTaskQueue(self, name, prefetch_count)
        return queue

    def _send_task(
        self, queue: str, task: Any, no_reply: bool, timeout: Optional[float] = None
    ) -> Optional[asyncio.Future[Any]]:
        timeout = _deadlines.check_timeout(timeout)
        connection = self._open()
        payload = self._codec.encode((task, no_reply))
        return self._sender.publish_task(queue, payload, no_reply, connection, timeout)

    def _send_task_now(
        self, queue: str, task: Any, no_reply: bool, timeout: Optional[float] = None
    ) -> Optional[concurrent.futures.Future[Any]]:
        timeout = _deadlines.check_timeout(timeout)
        connection = self._open()
        payload = self._codec.encode((task, no_reply))
        return self._sender.publish_task_now(queue, payload, no_reply, connection, timeout)


def _waiting_count(communicator: AsyncBrokerCommunicator) -> int:
    return communicator._sender.waiting
