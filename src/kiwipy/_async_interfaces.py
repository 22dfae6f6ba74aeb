"""The asyncio interfaces each transport implements once: :class:`AsyncCommunicator`, its
task queues (:class:`AsyncTaskQueue`) and the tasks taken from them in pull mode
(:class:`AsyncIncomingTask`); re-exported by :mod:`kiwipy.communications`.

Their methods are coroutines and their futures :class:`asyncio.Future` objects; the
contracts are those of the blocking :class:`~kiwipy.communications.Communicator`, and the
thread communicators are a thin facade over them (``kiwipy._thread``).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, Optional

from ._subscribers import BroadcastSubscriber, RpcSubscriber, TaskSubscriber

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

__all__ = ("AsyncCommunicator", "AsyncIncomingTask", "AsyncTaskQueue")


class AsyncIncomingTask(abc.ABC):
    """A task taken from a queue in pull mode (``next_task`` or ``async for``).

    ``state`` is one of ``'pending'``, ``'processing'``, ``'finished'``, ``'requeued'``.
    """

    @property
    @abc.abstractmethod
    def body(self) -> Any:
        """The task as sent."""

    @property
    @abc.abstractmethod
    def no_reply(self) -> bool:
        """Whether the sender asked for no reply."""

    @property
    @abc.abstractmethod
    def state(self) -> str:
        """The task's state."""

    @abc.abstractmethod
    def process(self) -> asyncio.Future[Any]:
        """Start processing: resolve the returned future with the outcome (cancelling it
        cancels the sender's future and finishes the task). If the future is
        garbage-collected unresolved, the task is requeued.

        :raises InvalidStateError: unless the task is pending.
        """

    @abc.abstractmethod
    async def requeue(self) -> None:
        """Give the task back to the queue for someone else.

        :raises InvalidStateError: unless the task is pending or processing.
        """

    @abc.abstractmethod
    def processing(self) -> AbstractAsyncContextManager[asyncio.Future[Any]]:
        """Async context manager yielding the outcome future; an exception in the block
        becomes the task's exception (and is re-raised); an unresolved outcome at exit
        requeues the task."""


class AsyncTaskQueue(abc.ABC):
    """A named task queue, for sending and for consuming in push or pull mode."""

    @abc.abstractmethod
    async def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[asyncio.Future[Any]]:
        """Queue *task*; see :meth:`Communicator.task_send`."""

    @abc.abstractmethod
    async def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        """Consume tasks with *subscriber*. :returns: its identifier."""

    @abc.abstractmethod
    async def remove_task_subscriber(self, identifier: Any) -> None:
        """:raises ValueError: for an unknown identifier."""

    @abc.abstractmethod
    def next_task(
        self, no_ack: bool = False, fail: bool = True, timeout: Optional[float] = None
    ) -> AbstractAsyncContextManager[Optional[AsyncIncomingTask]]:
        """Async context manager yielding the next task (pull mode).

        :param timeout: seconds to wait for a task to arrive; ``None`` (the default, as in
            kiwipy 0.9): take one only if the queue holds one now.
        :raises QueueEmpty: if none arrives within *timeout* and *fail* is true (otherwise
            it yields ``None``). A task still pending at exit is requeued.
        """

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[AsyncIncomingTask]:
        """Iterate over the tasks waiting in the queue; tasks left pending are requeued when
        the iteration ends."""


class AsyncCommunicator(abc.ABC):
    """The asyncio core of a transport. Methods mirror :class:`Communicator` as coroutines
    and return :class:`asyncio.Future` objects; see there for their contracts."""

    @property
    @abc.abstractmethod
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this communicator runs on."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect (or reconnect); does nothing if already connected."""

    @abc.abstractmethod
    async def disconnect(self) -> None:
        """Close everything; later operations raise :class:`~kiwipy.CommunicatorClosed`."""

    async def close(self) -> None:
        """The same as :meth:`disconnect`, under the name the thread communicators use
        (:meth:`Communicator.close`), so code moving between the two keeps working."""
        await self.disconnect()

    @abc.abstractmethod
    def connected(self) -> bool:
        """:returns: whether the communicator is connected."""

    async def __aenter__(self) -> AsyncCommunicator:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    @abc.abstractmethod
    async def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> Any:
        """See :meth:`Communicator.add_rpc_subscriber`."""

    @abc.abstractmethod
    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        """See :meth:`Communicator.remove_rpc_subscriber`."""

    @abc.abstractmethod
    async def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        """See :meth:`Communicator.add_task_subscriber`."""

    @abc.abstractmethod
    async def remove_task_subscriber(self, identifier: Any) -> None:
        """See :meth:`Communicator.remove_task_subscriber`."""

    @abc.abstractmethod
    async def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> Any:
        """See :meth:`Communicator.add_broadcast_subscriber`."""

    @abc.abstractmethod
    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        """See :meth:`Communicator.remove_broadcast_subscriber`."""

    @abc.abstractmethod
    async def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[asyncio.Future[Any]]:
        """See :meth:`Communicator.task_send`."""

    async def task_send_many(
        self,
        tasks: Iterable[Any],
        no_reply: bool = False,
        *,
        timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> list[Optional[asyncio.Future[Any]]]:
        """See :meth:`Communicator.task_send_many`.

        :param timeout: seconds the batch may take; when they run out no further message is
            sent and :class:`~kiwipy.BatchSendError` reports each message not confirmed by
            then (with :data:`~kiwipy.TimeoutError` for one written: it may have gone out,
            so its reply future is kept). ``None``: no limit but the transport's own.
        :param call_timeout: the deadline of each task, as ``timeout`` of :meth:`task_send`.
        """
        raise NotImplementedError(f"{type(self).__name__} has no task_send_many")

    @abc.abstractmethod
    async def rpc_send(
        self, recipient_id: Any, msg: Any, *, timeout: Optional[float] = None
    ) -> asyncio.Future[Any]:
        """See :meth:`Communicator.rpc_send`."""

    async def rpc_send_many(
        self,
        calls: Iterable[tuple[Any, Any]],
        *,
        timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> list[asyncio.Future[Any]]:
        """See :meth:`Communicator.rpc_send_many` (*timeout*, *call_timeout*: as for
        :meth:`task_send_many`)."""
        raise NotImplementedError(f"{type(self).__name__} has no rpc_send_many")

    @abc.abstractmethod
    async def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> Any:
        """See :meth:`Communicator.broadcast_send`; returns a true value once confirmed."""

    async def broadcast_send_many(
        self, broadcasts: Iterable[tuple[Any, ...]], *, timeout: Optional[float] = None
    ) -> None:
        """See :meth:`Communicator.broadcast_send_many` (*timeout*: as for
        :meth:`task_send_many`)."""
        raise NotImplementedError(f"{type(self).__name__} has no broadcast_send_many")

    @abc.abstractmethod
    async def task_queue(
        self, queue_name: str, prefetch_size: int = 0, prefetch_count: int = 0
    ) -> AsyncTaskQueue:
        """:returns: the task queue *queue_name*, declared if needed."""
