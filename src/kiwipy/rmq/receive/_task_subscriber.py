"""Consuming one task queue: :class:`RmqTaskSubscriber` (re-exported by
:mod:`kiwipy.rmq.tasks`, kiwipy 0.9's path for it), in push mode (subscribers) and in pull
mode (``next_task`` and ``async for``).

The queue is declared as :mod:`kiwipy.rmq.receive._topology` says; consuming, prefetch and
what the broker does to consumers are :mod:`kiwipy.rmq.receive._task_consumer`; running the
tasks pushed is :mod:`kiwipy.rmq.receive._task_runs`; every task received is screened against
leases before it runs (:mod:`kiwipy.rmq.leases._lease_tasks`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Optional

import aiormq.abc
import shortuuid

from ... import exceptions
from .. import defaults
from ..connection import _amqp
from ..connection._session import Session, codec_options
from ..messages import BaseConnectionWithExchange
from . import _cancel
from ._incoming import TASK_PENDING, RmqIncomingTask, TaskResponder
from ._task_consumer import TaskConsumer
from ._task_runs import TaskRuns
from ._topology import declare_task_queue

__all__ = ("RmqTaskSubscriber",)


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
        self._session = Session.of(connection, codec_options(encoder, decoder, testing_mode))
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
