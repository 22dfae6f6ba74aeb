"""``AsyncBrokerCommunicator``: the asyncio communicator every embedded transport shares.

It is written once against a :class:`~kiwipy.core.Broker` (the in-process and the SQLite
transports each supply one); the task queues and pull-mode tasks are in
:mod:`kiwipy.core._tasks`; reply shapes and waiting in :mod:`kiwipy._replies`, shared with
the RabbitMQ transport.

Invariants:

* The core's state is only touched on its own loop: the broker posts everything it delivers
  there with ``call_soon_threadsafe``, and subscribers run there as jobs.
* Every message body goes through :meth:`AsyncBrokerCommunicator._encode` when sent and
  :meth:`~AsyncBrokerCommunicator._decode` when received, so with an encoder nothing crosses
  the broker that could not cross RabbitMQ.
* Closing lets RPC calls being handled answer (for up to a second), then cancels the running
  jobs; the broker has already put their tasks back in the queues, so a closed communicator
  never replies to or acks a task afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Optional

import shortuuid

from .. import _broadcasts, _cancels, _deadlines, _limits, _replies, _tracing, encoders, exceptions
from .._outcome import EXCEPTION, DeferredClose, Outcome, encode_reply, invoke
from ..communications import (
    AsyncCommunicator,
    BroadcastSubscriber,
    RpcSubscriber,
    TaskSubscriber,
)
from ._broker import Broker, Connection, Delivery, Message, Payload
from ._tasks import BrokerIncomingTask, BrokerTaskQueue

__all__ = ("DEFAULT_TASK_QUEUE", "AsyncBrokerCommunicator")

#: The destination name of broadcasts in traces (RabbitMQ's is the message exchange).
_BROADCASTS = "broadcast"

_LOGGER = logging.getLogger(__name__)

DEFAULT_TASK_QUEUE = "kiwipy.tasks"
_CLOSE_TIMEOUT = 5.0  # seconds disconnect() waits for cancelled subscriber calls to unwind
_DRAIN_GRACE = 1.0  # seconds RPC calls being handled get to answer on close (as on RabbitMQ)


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
        self._encoder = (
            None if encoder is None and decoder is None else encoders.resolve(encoder, decoder)
        )
        self._broker = broker
        _limits.check_options(options)
        self._default_queue = options.get("task_queue", DEFAULT_TASK_QUEUE)
        self._prefetch_count = options.get("task_prefetch_count", 0)
        self._max_size = options.get("max_message_size", _limits.DEFAULT_MAX_MESSAGE_SIZE)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._connection: Optional[Connection] = None
        self._closed = False
        self._replies: _replies.Waiters[None] = _replies.Waiters(self._new_future)
        _tracing.count_replies(self, self.system, _waiting_count)
        self._rpc: dict[str, RpcSubscriber] = {}
        self._broadcast: dict[Any, BroadcastSubscriber] = {}
        self._queues: dict[str, BrokerTaskQueue] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._rpc_jobs: set[asyncio.Task[None]] = set()  # RPC calls being handled
        self._handlers = _cancels.RunningHandlers()  # the same, by correlation id
        self._deferred_close = DeferredClose()
        self._held: set[BrokerIncomingTask] = set()  # pull-mode tasks being processed
        self._broadcast_tally = _broadcasts.Tally()

    @property
    def broker(self) -> Broker:
        """The broker this communicator is connected to."""
        return self._broker

    @property
    def encoder(self) -> Optional[encoders.Encoder]:
        """The encoder every message goes through, or ``None`` (passed by reference)."""
        return self._encoder

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
            self._connection = self._broker.connect(self._loop, self._on_reply, self._on_broadcast)

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
        self._replies.fail_all(exceptions.CommunicatorClosed())
        if not self._deferred_close.start(self._stop_jobs):
            await self._stop_jobs()

    async def _stop_jobs(self) -> None:
        current = asyncio.current_task()
        answering = [job for job in self._rpc_jobs if job is not current]
        if answering:
            await asyncio.wait(answering, timeout=_DRAIN_GRACE)
        jobs = [job for job in self._jobs if job is not current and not job.done()]
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.wait(jobs, timeout=_CLOSE_TIMEOUT)
        self._held.clear()

    # Subscribers

    async def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> Any:
        """RPC identifiers are unique across the whole broker and compared as strings (a
        ``uuid.UUID`` reaches the subscriber registered with its ``str``), as on RabbitMQ.

        :raises DuplicateSubscriberIdentifier: if any communicator holds the identifier.
        :raises InvalidName: if the identifier breaks the naming rules (``kiwipy._limits``).
        """
        connection = self._open()
        identifier = shortuuid.uuid() if identifier is None else identifier
        key = _limits.rpc_identifier(identifier)
        self._broker.bind_rpc(connection, key, self._on_rpc)
        self._rpc[key] = subscriber
        return identifier

    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        connection = self._open()
        if self._rpc.pop(str(identifier), None) is None:
            raise ValueError(f"Unknown subscriber '{identifier}'")
        self._broker.unbind_rpc(connection, str(identifier))

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
        identifier = shortuuid.uuid() if identifier is None else identifier
        if identifier in self._broadcast:
            raise exceptions.DuplicateSubscriberIdentifier(f"Broadcast identifier '{identifier}'")
        self._broadcast[identifier] = subscriber
        return identifier

    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        self._open()
        if self._broadcast.pop(identifier, None) is None:
            raise ValueError(f"Broadcast subscriber '{identifier}' unknown")

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
        payloads = [self._encode((task, no_reply)) for task in tasks]
        queue = self._default_queue
        messages = [self._task_message(queue, p, connection, call_timeout) for p in payloads]
        self._broker.publish_many(queue, messages)
        return [self._expect_task(queue, m, no_reply, call_timeout) for m in messages]

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
        return self._send_rpc(key, self._encode(msg), connection, timeout)

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
            (_limits.rpc_identifier(recipient_id), self._encode(msg)) for recipient_id, msg in calls
        ]
        futures: list[Optional[asyncio.Future[Any]]] = []
        errors: dict[int, BaseException] = {}
        for index, (key, payload) in enumerate(requests):
            try:
                futures.append(self._send_rpc(key, payload, connection, call_timeout))
            except exceptions.UnroutableError as exc:
                futures.append(None)
                errors[index] = exc
        if errors:
            raise exceptions.BatchSendError(futures, errors) from errors[min(errors)]
        return [future for future in futures if future is not None]  # all of them

    def broadcast_tally(self) -> _broadcasts.Tally:
        """:returns: the count of this communicator's broadcast handlers (one per subscriber
        and broadcast), started as the broadcasts arrive: the thread facade waits on it after
        a blocking ``broadcast_send`` (docs/guarantees.md)."""
        return self._broadcast_tally

    async def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        """:returns: ``True`` (not an error when nobody listens).
        :raises EncodeError: if the broadcast cannot be encoded."""
        self._open()
        envelope = _broadcasts.envelope(body, sender, subject, correlation_id)
        self._broker.broadcast(self._traced(self._encode(envelope), "broadcast", _BROADCASTS))
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
        payloads = [self._encode(_broadcasts.envelope(*each)) for each in arguments]
        for payload in payloads:
            self._broker.broadcast(self._traced(payload, "broadcast", _BROADCASTS))

    # Helpers shared with the task queues (package-private)

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
        payload = self._encode((task, no_reply))
        return self._publish_task(queue, payload, no_reply, connection, timeout)

    def _publish_task(
        self,
        queue: str,
        payload: Payload,
        no_reply: bool,
        connection: Connection,
        timeout: Optional[float] = None,
    ) -> Optional[asyncio.Future[Any]]:
        message = self._task_message(queue, payload, connection, timeout)
        self._broker.publish(queue, message)
        return self._expect_task(queue, message, no_reply, timeout)

    def _task_message(
        self, queue: str, payload: Payload, connection: Connection, timeout: Optional[float]
    ) -> Message:
        correlation_id = str(uuid.uuid4())
        payload = self._traced(payload, "task", queue, correlation_id)
        message = Message(payload, correlation_id, connection)
        message.deadline = _deadlines.absolute(timeout)
        return message

    def _expect_task(
        self, queue: str, message: Message, no_reply: bool, timeout: Optional[float]
    ) -> Optional[asyncio.Future[Any]]:
        if no_reply:
            return None
        future = self._expect(message.correlation_id, _deadlines.remaining(message.deadline))
        future.add_done_callback(functools.partial(self._on_task_done, queue, message))
        return future

    def _on_task_done(self, queue: str, message: Message, future: asyncio.Future[Any]) -> None:
        """A task whose future its sender cancelled is not started any more: the broker
        marks it so for the worker that takes it; no reply is awaited for it."""
        if future.cancelled():
            self._forget_reply(message.correlation_id)
            try:
                self._broker.cancel_task(queue, message)
            except exceptions.KiwiError as exc:  # the worker will just run it
                _LOGGER.warning("could not mark task %s cancelled: %s", message.correlation_id, exc)

    def _send_rpc(
        self, key: str, payload: Payload, connection: Connection, timeout: Optional[float] = None
    ) -> asyncio.Future[Any]:
        correlation_id = str(uuid.uuid4())
        payload = self._traced(payload, "rpc", key, correlation_id)
        message = Message(payload, correlation_id, connection)
        message.deadline = _deadlines.absolute(timeout)
        self._broker.send_rpc(key, message)
        # Replies are posted to this loop, so none can arrive before the future is registered.
        future = self._expect(correlation_id, _deadlines.remaining(message.deadline))
        future.add_done_callback(functools.partial(self._on_rpc_done, key, correlation_id))
        return future

    def _on_rpc_done(self, key: str, correlation_id: str, future: asyncio.Future[Any]) -> None:
        """A caller that cancelled its RPC cancels the handler too (:mod:`kiwipy._cancels`)."""
        if not future.cancelled() or self._replies.pop(correlation_id) is None:
            return  # answered (the future was popped with its reply), or failed here
        cancel = Message(Payload(None, None), "", None, cancels=correlation_id)
        try:
            self._broker.send_rpc(key, cancel)
        except exceptions.KiwiError:  # the responder is gone, and its handler with it
            pass

    def _encode(self, obj: Any) -> Payload:
        if self._encoder is None:
            return Payload(obj, None)
        data = _limits.check_size(self._encoder.encode(obj), self._max_size)
        return Payload(data, self._encoder)

    def _traced(
        self, payload: Payload, kind: str, destination: str, correlation_id: Optional[str] = None
    ) -> Payload:
        """:returns: *payload* with the trace context headers of its PRODUCER span (itself
        without OpenTelemetry): the one place a memory send is traced."""
        if not _tracing.ENABLED:
            return payload
        headers = _tracing.produce(self.system, kind, destination, correlation_id, payload.data)
        return payload._replace(headers=headers)

    def _handling(
        self,
        handling: Any,
        kind: str,
        destination: str,
        payload: Payload,
        correlation_id: Any,
        redelivered: bool = False,
    ) -> Any:
        """:returns: the coroutine *handling* a received message, run in the CONSUMER span
        that continues the sender's trace (*handling* itself without OpenTelemetry)."""
        if not _tracing.ENABLED:
            return handling
        return _tracing.process(
            handling,
            self.system,
            kind,
            destination,
            payload.headers,
            correlation_id,
            payload.data,
            redelivered=redelivered,
        )

    def _handling_task(self, handling: Any, queue: str, message: Message) -> Any:
        """:meth:`_handling` for a task *message* of *queue*."""
        if not _tracing.ENABLED:
            return handling
        payload, correlation_id = message.payload, message.correlation_id
        return self._handling(handling, "task", queue, payload, correlation_id, message.redelivered)

    def _decode(self, payload: Payload) -> Any:
        if payload.encoder is None:
            return payload.data
        return (self._encoder or payload.encoder).decode(payload.data)

    def _decode_task(self, payload: Payload) -> tuple[Any, bool]:
        body = self._decode(payload)
        if not isinstance(body, (tuple, list)) or len(body) != 2:
            encoder = self._encoder or payload.encoder
            name = encoder.name if encoder is not None else "memory"
            raise exceptions.DecodeError("a task message is a (task, no_reply) pair", encoder=name)
        return body[0], bool(body[1])

    def _expect(self, correlation_id: str, timeout: Optional[float] = None) -> asyncio.Future[Any]:
        future = self._replies.expect(correlation_id, None)
        _deadlines.arm(future, timeout, functools.partial(self._forget_reply, correlation_id))
        return future

    def _forget_reply(self, correlation_id: str) -> None:
        self._replies.forget(correlation_id)

    def _new_future(self) -> asyncio.Future[Any]:
        return self.loop.create_future()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        try:
            job = self.loop.create_task(coro)
        except RuntimeError:  # the loop is closing: the coroutine will never run
            coro.close()
            raise
        self._jobs.add(job)
        job.add_done_callback(self._job_done)
        return job

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        if not job.cancelled() and job.exception() is not None:
            _LOGGER.error("kiwipy communicator job failed", exc_info=job.exception())

    async def _reply_pending(self, message: Message) -> None:
        self._reply(message, _replies.pending_response())

    def _reply(self, message: Message, response: dict[str, Any]) -> bool:
        """Send *response* to the requester of *message*; an unencodable one is replaced by
        the encoding error. :returns: whether *response* itself could be sent."""
        if message.reply_to is None:
            return True
        name = "memory" if self._encoder is None else self._encoder.name
        payload, sent = encode_reply(self._encode, response, _replies.exception_response, name)
        final = _replies.PENDING_KEY not in response
        self._broker.send_reply(message.reply_to, message.correlation_id, payload, final)
        return sent

    def _conclude_task(self, delivery: Delivery, no_reply: bool, result: Outcome) -> None:
        """Reply with a task's final outcome, then ack it (the order RabbitMQ tasks use)."""
        if self._closed:  # the task went back to its queue when the connection closed
            return
        if no_reply or self._reply(delivery.message, _replies.outcome_response(result)):
            self._broker.ack(delivery)
        else:
            self._broker.dead_letter(delivery, "its reply cannot be encoded")

    # Receiving (posted to this loop by the broker)

    def _on_reply(self, correlation_id: str, payload: Payload) -> None:
        if self._replies.get(correlation_id) is None:
            _LOGGER.debug("dropping reply for unknown or finished request %s", correlation_id)
            return
        try:
            reply = _replies.decode_reply(self._decode(payload))
        except exceptions.DecodeError as exc:
            self._replies.fail(correlation_id, exc)
            return
        self._replies.resolve(correlation_id, reply)

    def _on_rpc(self, key: str, message: Message) -> None:
        subscriber = self._rpc.get(key)
        if message.cancels is not None:
            self._handlers.cancel(message.cancels)
        elif self._closed or subscriber is None:
            self._reply(message, _replies.lost_response(f"the RPC subscriber '{key}' is gone"))
        elif _deadlines.expired(message.deadline):
            # its caller has DeadlineExceeded already: a request past it is never started
            _LOGGER.debug("dropping RPC %s to %r: past its deadline", message.correlation_id, key)
        else:
            serving = self._serve_rpc(subscriber, message)
            job = self._spawn(
                self._handling(serving, "rpc", key, message.payload, message.correlation_id)
            )
            self._rpc_jobs.add(job)
            job.add_done_callback(self._rpc_jobs.discard)

    async def _serve_rpc(self, subscriber: RpcSubscriber, message: Message) -> None:
        try:
            try:
                msg = self._decode(message.payload)
            except exceptions.DecodeError as exc:
                _tracing.failed(exc)
                self._reply(message, _replies.exception_response(exc))
                return
            pending = functools.partial(self._reply_pending, message)
            invoking = invoke(subscriber, (self, msg), pending)
            with self._handlers.running(message.correlation_id):
                result = await _deadlines.bounded(message.deadline, invoking)
            if result.kind == EXCEPTION:
                _tracing.failed(result.value)
            if not _deadlines.cut_short(result):  # its caller has DeadlineExceeded already
                self._reply(message, _replies.outcome_response(result))
        except asyncio.CancelledError:
            if self._handlers.was_cancelled(message.correlation_id):
                return  # by its caller, who has its cancelled future: no reply
            if self._closed:
                closed = "the RPC subscriber was closed before it answered"
                self._reply(message, _replies.lost_response(closed))
            raise

    def _on_broadcast(self, payload: Payload) -> None:
        if self._closed or not self._broadcast:
            return
        try:
            envelope = self._decode(payload)
            args = tuple(envelope[key] for key in ("body", "sender", "subject", "correlation_id"))
        except (exceptions.DecodeError, TypeError, KeyError):
            _LOGGER.exception("dropping a broadcast that cannot be decoded")
            return
        for subscriber in list(self._broadcast.values()):
            # Counted as the delivery arrives, before the handler runs (kiwipy._thread).
            self._broadcast_tally.started()
            calling = self._call_broadcast(subscriber, args)
            handler = self._spawn(self._handling(calling, "broadcast", _BROADCASTS, payload, None))
            handler.add_done_callback(self._broadcast_tally.finished)

    async def _call_broadcast(self, subscriber: BroadcastSubscriber, args: tuple[Any, ...]) -> None:
        result = await invoke(subscriber, (self, *args), futures=False)
        if result.kind == EXCEPTION:
            error = result.value
            _tracing.failed(error)
            _LOGGER.error(
                "Exception in broadcast receiver %r: %r",
                subscriber,
                error,
                exc_info=(type(error), error, error.__traceback__),
            )


def _waiting_count(communicator: AsyncBrokerCommunicator) -> int:
    return len(communicator._replies)
