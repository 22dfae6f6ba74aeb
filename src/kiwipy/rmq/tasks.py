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

This is kiwipy 0.9's module and its users' import path. :class:`RmqTaskQueue` is defined here;
the publisher is :mod:`kiwipy.rmq.send._task_publisher`, the subscriber
:mod:`kiwipy.rmq.receive._task_subscriber`, the task taken in pull mode
:mod:`kiwipy.rmq.receive._incoming` (all re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any, Optional

from ..communications import AsyncTaskQueue
from . import defaults
from .connection._session import Session, codec_options
from .receive._incoming import (
    TASK_FINISHED,
    TASK_PENDING,
    TASK_PROCESSING,
    TASK_REQUEUED,
    RmqIncomingTask,
    TaskInfo,
)
from .receive._replies import ReplyQueue
from .receive._task_subscriber import RmqTaskSubscriber
from .send import _outgoing
from .send._task_publisher import RmqTaskPublisher

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
        session = Session.of(connection, codec_options(encoder, decoder, testing_mode))
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


# The public classes keep the module kiwipy 0.9 defines them in (see kiwipy.communications).
for _public in (RmqTaskPublisher, RmqTaskSubscriber):
    _public.__module__ = __name__
del _public
