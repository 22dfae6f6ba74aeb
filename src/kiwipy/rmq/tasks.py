"""Task queues: :class:`RmqTaskPublisher`, :class:`RmqTaskSubscriber`, :class:`RmqTaskQueue`.

* Queues are declared passively first and a missing one with safe defaults: no message TTL,
  dead-lettering to ``<queue>.dead``, classic or quorum (:mod:`kiwipy.rmq.receive._topology`; kiwipy
  0.9 declared a 7-day TTL, and RabbitMQ keeps a requeued message's original expiry, so old
  tasks silently vanished). An existing queue is never changed.
* Every task received, pushed or pulled, is *screened* before it runs: a lease copy is checked
  against its owner, and a task already running in this worker is never run twice
  (:mod:`kiwipy.rmq.leases._lease_tasks`). A task running longer than ``task_lease_after`` becomes a
  lease; consuming, prefetch and what the broker does to consumers are in
  :mod:`kiwipy.rmq.receive._task_consumer`.
* Subscribers are tried in the order they were added; :class:`~kiwipy.TaskRejected` passes the
  task to the next one, any other outcome is final (kiwipy 0.9 went on trying the others
  after an exception: bug B3). Running the tasks pushed is :mod:`kiwipy.rmq.receive._task_runs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any, Optional

import aiormq.abc
import shortuuid

from .. import _deadlines, exceptions
from ..communications import AsyncTaskQueue
from . import defaults, protocol
from .connection import _amqp
from .connection._session import Session
from .messages import BaseConnectionWithExchange, BasePublisherWithReplyQueue
from .receive import _cancel
from .receive._incoming import (
    TASK_FINISHED,
    TASK_PENDING,
    TASK_PROCESSING,
    TASK_REQUEUED,
    RmqIncomingTask,
    TaskInfo,
    TaskResponder,
)
from .receive._replies import ReplyQueue
from .receive._task_consumer import TaskConsumer
from .receive._task_runs import TaskRuns
from .receive._topology import declare_task_queue
from .send import _batch, _offload, _outgoing

__all__ = (
    "TASK_FINISHED",
    "TASK_PENDING",
    "TASK_PROCESSING",
    "TASK_REQUEUED",
    "RmqIncomingTask",
    "RmqTaskPublisher",
    "RmqTaskQueue",
    "RmqTaskSubscriber",
    "TaskInfo",
)

_LOGGER = logging.getLogger(__name__)


def _codec_options(encoder: Any, decoder: Any, testing_mode: bool) -> dict[str, Any]:
    return {"encoder": encoder, "decoder": decoder, "testing_mode": testing_mode}


class RmqTaskPublisher(BasePublisherWithReplyQueue):
    """Sends tasks to one task queue and receives their results.

    :param connection: an aio-pika connection (or a communicator's internal session).
    :param queue_name: the task queue (the routing key).
    :param exchange_name: the task exchange (kiwipy 0.9's default is the *message* exchange).
    :param confirm_deliveries: accepted for compatibility; every send is confirmed.
    :param replies: the reply queue to use (a communicator shares one), else its own.
    """

    def __init__(
        self,
        connection: Any,
        queue_name: str = defaults.TASK_QUEUE,
        exchange_name: str = defaults.MESSAGE_EXCHANGE,
        exchange_params: Optional[dict[str, Any]] = None,
        encoder: Any = defaults.ENCODER,
        decoder: Any = defaults.DECODER,
        confirm_deliveries: bool = True,
        testing_mode: bool = False,
        *,
        replies: Optional[ReplyQueue] = None,
    ) -> None:
        self._session = Session.of(connection, _codec_options(encoder, decoder, testing_mode))
        self._owns_session = self._session is not connection
        self._queue_name = queue_name
        self._exchange_name = exchange_name
        self._exchange_params = _amqp.exchange_arguments(
            exchange_params, self._session.testing_mode
        )
        self._replies = replies or ReplyQueue(self._session, exchange_name)
        self._content_type = self._session.encoder.content_type
        self._cancelling: set[asyncio.Future[Any]] = set()  # cancel notices being sent

    async def connect(self) -> None:
        """Declare the exchange and start receiving replies."""
        await self._replies.bind(self._exchange_name, self._exchange_params)

    async def disconnect(self) -> None:
        """Stop receiving replies; waiting futures fail with CommunicatorClosed."""
        self._replies.fail_all(exceptions.CommunicatorClosed())
        await self._replies.close()
        if self._owns_session:
            await self._session.close()

    async def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[asyncio.Future[Any]]:
        """Queue *task* (persistent, confirmed by the broker before this returns).

        :param timeout: seconds the task may take to finish: then the future fails with
            :class:`~kiwipy.DeadlineExceeded`, and a task not started by then never is (it
            is dead-lettered; :mod:`kiwipy._deadlines`). ``None``: no deadline.
        :returns: a future for the task's outcome, or ``None`` with *no_reply*.
        :raises UnroutableError: (also an ``aio_pika.exceptions.DeliveryError``) if no queue
            is bound for it.
        :raises MessageTooLarge: if it encodes to more than ``max_message_size``.
        """
        _LOGGER.debug("Sending task to %r (reply=%r): %r", self._queue_name, not no_reply, task)
        # large tasks are encoded off the loop (issue 6)
        timeout = _deadlines.check_timeout(timeout)
        body = await _offload.encode(self._session, protocol.encode_task(task, no_reply))
        message, correlation_id = _outgoing.task(self.target(), body, timeout)
        future = (
            None
            if no_reply
            else self._replies.expect(correlation_id, self._queue_name, None, message)
        )
        if future is not None:  # armed now, when the deadline in the message was computed
            self._replies.deadline(correlation_id, future, timeout)
        try:
            await self._session.publish(*message)
        except BaseException:
            self._replies.forget(correlation_id)
            if future is not None:
                future.cancel()  # nobody has it: no timer may fail it unseen
            raise
        if future is not None:
            future.add_done_callback(functools.partial(self._on_task_done, correlation_id))
        return future

    def _on_task_done(self, correlation_id: str, future: asyncio.Future[Any]) -> None:
        """A task whose future its sender cancelled is announced to the queue's workers, who
        do not start it any more (:mod:`kiwipy.rmq.receive._cancel`, with its limits)."""
        if not future.cancelled():
            return
        self._replies.forget(correlation_id)
        notice = _cancel.task_notice(self._exchange_name, self._queue_name, correlation_id)
        if notice is not None:
            sending = asyncio.ensure_future(self._session.publish(*notice, retry=False))
            self._cancelling.add(sending)
            sending.add_done_callback(self._notice_sent)

    def _notice_sent(self, sending: asyncio.Future[Any]) -> None:
        self._cancelling.discard(sending)
        if not sending.cancelled() and sending.exception() is not None:
            _LOGGER.warning("a task cancel was not announced: %s", sending.exception())

    async def task_send_many(
        self,
        tasks: Iterable[Any],
        no_reply: bool = False,
        *,
        timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> list[Optional[asyncio.Future[Any]]]:
        """Queue *tasks* with many publishes in flight; see :mod:`kiwipy.rmq.send._batch`.

        :returns: once every task is confirmed, a reply future per task (``None`` entries
            with *no_reply*).
        :raises BatchSendError: if any task was not confirmed.
        """
        call_timeout = _deadlines.check_timeout(call_timeout)
        return await _batch.send_tasks(self.target(), tasks, no_reply, timeout, call_timeout)

    def target(self) -> _outgoing.TaskTarget:
        """Where this publisher's tasks go, for ``task_send_many`` and the thread facade's
        quick sends, which send them as :meth:`task_send` does (issue 6)."""
        return _outgoing.TaskTarget(
            self._session, self._exchange_name, self._queue_name, self._replies, self._content_type
        )


class RmqTaskSubscriber(BaseConnectionWithExchange):
    """Consumes tasks from one task queue (push mode) or hands them out (pull mode).

    :param owner: first argument of every subscriber call (default: this object).
    """

    def __init__(
        self,
        connection: Any,
        exchange_name: str = defaults.MESSAGE_EXCHANGE,
        queue_name: str = defaults.TASK_QUEUE,
        testing_mode: bool = False,
        decoder: Any = defaults.DECODER,
        encoder: Any = defaults.ENCODER,
        exchange_params: Optional[dict[str, Any]] = None,
        prefetch_size: int = defaults.TASK_PREFETCH_SIZE,
        prefetch_count: int = defaults.TASK_PREFETCH_COUNT,
        *,
        owner: Any = None,
    ) -> None:
        self._session = Session.of(connection, _codec_options(encoder, decoder, testing_mode))
        self._owns_session = self._session is not connection
        self._exchange_name = exchange_name
        self._exchange_params = _amqp.exchange_arguments(
            exchange_params, self._session.testing_mode
        )
        self._queue_name = queue_name
        self._purpose = f"tasks:{queue_name}:{shortuuid.uuid()}"
        self._session.set_prefetch(self._purpose, prefetch_size, prefetch_count)
        self._owner = self if owner is None else owner
        self._subscribers: dict[Any, Any] = {}
        self.responder = TaskResponder(self._session, exchange_name, queue_name)
        self.responder.cancels = _cancel.TaskCancels(
            self._session, f"{self._purpose}:cancels", exchange_name, queue_name
        )
        self._consumer = TaskConsumer(
            self._session,
            self._purpose,
            queue_name,
            self._on_task,
            (prefetch_size, prefetch_count),
        )
        self._runs = TaskRuns(
            self.responder, self._consumer, self._subscribers, self._owner, queue_name
        )

    async def connect(self) -> None:
        """Declare the exchange and the task queue (module doc)."""
        await self._session.declare_exchange(self._exchange_name, self._exchange_params)
        await declare_task_queue(self._session, self._exchange_name, self._queue_name)
        self._session.add_restorer(self._purpose, self, self._restore)

    async def _restore(self) -> None:
        await self.connect()
        if self._subscribers:
            await self._listen()
            await self._consumer.start()

    async def _listen(self) -> None:
        """Hear the cancels of tasks (:mod:`kiwipy.rmq.receive._cancel`), once this consumes."""
        if self.responder.cancels is not None:
            await self.responder.cancels.listen()

    async def add_task_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        """Consume tasks with *subscriber*. :returns: its identifier.

        :raises DuplicateSubscriberIdentifier: if it is taken.
        """
        identifier = identifier or shortuuid.uuid()
        if identifier in self._subscribers:
            raise exceptions.DuplicateSubscriberIdentifier(f"Task identifier '{identifier}'")
        self._subscribers[identifier] = subscriber
        if not self._consumer.wanted:
            try:
                await self._listen()
                await self._consumer.start()
            except BaseException:
                del self._subscribers[identifier]
                raise
        return identifier

    async def remove_task_subscriber(self, identifier: Any) -> None:
        """:raises ValueError: for an unknown identifier."""
        try:
            del self._subscribers[identifier]
        except KeyError:
            raise ValueError(f"Unknown task subscriber '{identifier}'") from None
        if not self._subscribers:
            await self._consumer.stop()

    async def _on_task(self, message: aiormq.abc.DeliveredMessage) -> None:
        await self._runs.on_task(message)

    # Pull mode

    async def _get(self, no_ack: bool, timeout: float) -> Optional[RmqIncomingTask]:
        """:returns: the next task, polling until *timeout*; parked and screened-out
        messages are skipped."""
        deadline = self._session.loop.time() + timeout
        await self._listen()
        while True:
            message = await self._consumer.get(no_ack, deadline)
            if message is None:
                return None
            body = await self.responder.decode(message)
            if body is not None and (no_ack or await self.responder.leases.screen(message)):
                return RmqIncomingTask(self.responder, message, body, no_ack)

    @contextlib.asynccontextmanager
    async def next_task(
        self, no_ack: bool = False, fail: bool = True, timeout: Optional[float] = None
    ) -> AsyncIterator[Optional[RmqIncomingTask]]:
        """Async context manager yielding the next task, waiting up to *timeout* seconds for
        one (``None``: not at all, as kiwipy 0.9).

        :raises QueueEmpty: if none came and *fail* is true (else it yields ``None``). A task
            still pending at exit is requeued.
        """
        await asyncio.sleep(0)  # let requeues scheduled just before run first
        task = await self._get(no_ack, timeout or 0.0)
        if task is None:
            if fail:
                waited = f" after {timeout} s" if timeout else ""
                raise exceptions.QueueEmpty(f"no task in {self._queue_name!r}{waited}")
            yield None
            return
        try:
            yield task
        finally:
            if task.state == TASK_PENDING:
                await task.requeue()

    async def __aiter__(self) -> AsyncIterator[RmqIncomingTask]:
        """Iterate over the tasks waiting now; those left pending are requeued at the end (so
        one iteration never sees a task twice)."""
        taken: list[RmqIncomingTask] = []
        try:
            while True:
                task = await self._get(no_ack=False, timeout=0)
                if task is None:
                    return
                taken.append(task)
                yield task
        finally:
            for task in taken:
                if task.state == TASK_PENDING:
                    await task.requeue()

    async def disconnect(self) -> None:
        """Stop consuming. Tasks being processed are not acknowledged: closing the
        connection gives them back to the broker."""
        self._session.remove_restorer(self._purpose, self)
        await self._consumer.stop()
        self._runs.cancel()
        if self._owns_session:
            await self._session.close()


class RmqTaskQueue(AsyncTaskQueue):
    """A task queue for sending and consuming (a publisher and a subscriber).

    :param owner: first argument of every subscriber call (default: the subscriber).
    :param replies: the reply queue to use (a communicator shares one).
    """

    def __init__(
        self,
        connection: Any,
        exchange_name: str = defaults.MESSAGE_EXCHANGE,
        queue_name: str = defaults.TASK_QUEUE,
        decoder: Any = defaults.DECODER,
        encoder: Any = defaults.ENCODER,
        exchange_params: Optional[dict[str, Any]] = None,
        prefetch_size: int = defaults.TASK_PREFETCH_SIZE,
        prefetch_count: int = defaults.TASK_PREFETCH_COUNT,
        testing_mode: bool = False,
        *,
        owner: Any = None,
        replies: Optional[ReplyQueue] = None,
    ) -> None:
        session = Session.of(connection, _codec_options(encoder, decoder, testing_mode))
        self._session = session
        self._owns_session = session is not connection
        self._publisher = RmqTaskPublisher(
            session, queue_name, exchange_name, exchange_params, replies=replies
        )
        self._subscriber = RmqTaskSubscriber(
            session,
            exchange_name,
            queue_name,
            exchange_params=exchange_params,
            prefetch_size=prefetch_size,
            prefetch_count=prefetch_count,
            owner=owner,
        )
        self._owns_replies = replies is None

    async def __aiter__(self) -> AsyncIterator[RmqIncomingTask]:
        async for task in self._subscriber:
            yield task

    async def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[asyncio.Future[Any]]:
        return await self._publisher.task_send(task, no_reply, timeout=timeout)

    async def task_send_many(
        self,
        tasks: Iterable[Any],
        no_reply: bool = False,
        *,
        timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> list[Optional[asyncio.Future[Any]]]:
        """See :meth:`RmqTaskPublisher.task_send_many`."""
        return await self._publisher.task_send_many(
            tasks, no_reply, timeout=timeout, call_timeout=call_timeout
        )

    def target(self) -> _outgoing.TaskTarget:
        """See :meth:`RmqTaskPublisher.target`."""
        return self._publisher.target()

    async def add_task_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        return await self._subscriber.add_task_subscriber(subscriber, identifier)

    async def remove_task_subscriber(self, identifier: Any) -> None:
        await self._subscriber.remove_task_subscriber(identifier)

    def next_task(
        self, no_ack: bool = False, fail: bool = True, timeout: Optional[float] = None
    ) -> contextlib.AbstractAsyncContextManager[Optional[RmqIncomingTask]]:
        """See :meth:`RmqTaskSubscriber.next_task`."""
        return self._subscriber.next_task(no_ack=no_ack, fail=fail, timeout=timeout)

    async def connect(self) -> None:
        """Declare the queue, then get ready to send."""
        await self._subscriber.connect()
        await self._publisher.connect()

    async def disconnect(self) -> None:
        """Stop consuming (and receiving replies, unless the reply queue is shared)."""
        await self._subscriber.disconnect()
        if self._owns_replies:
            await self._publisher.disconnect()
        if self._owns_session:
            await self._session.close()
