"""The components of one :class:`~kiwipy.rmq.communicator.RmqCommunicator`, made on first
use: the message publisher and subscriber (:mod:`kiwipy.rmq.messages`), the default task
queue and the named task queues (:mod:`kiwipy.rmq.tasks`).

Invariants:

* Each lazy component is made once, even with concurrent callers; a failed attempt is made
  again by the next call.
* Once :attr:`Components.closed` is set nothing new is made (:class:`~kiwipy.CommunicatorClosed`)
  and the quick lanes (:mod:`kiwipy.rmq.send._lane`) get no target.
* :meth:`Components.stop` disconnects every component made, then closes the shared reply
  queue; a component's failure to disconnect is logged, not raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Callable, Optional, TypeVar, cast

from .. import _broadcasts, exceptions
from ._options import RmqOptions
from .connection._session import Session
from .messages import RmqPublisher, RmqSubscriber
from .receive._replies import ReplyQueue
from .send._batch import MessageTarget, TaskTarget
from .tasks import RmqTaskQueue

__all__ = ("Components",)

_LOGGER = logging.getLogger("kiwipy.rmq.communicator")

T = TypeVar("T")


class Components:
    """The components of a communicator over *session*.

    :param session: the communicator's session, shared by every component.
    :param options: the resolved communicator options.
    :param replies: the reply queue shared by every sender.
    :param owner: first argument of every subscriber call (the communicator).
    :param tally: the count of broadcast handlers running (see
        :meth:`kiwipy.rmq.communicator.RmqCommunicator.broadcast_tally`).
    """

    def __init__(
        self,
        session: Session,
        options: RmqOptions,
        replies: ReplyQueue,
        owner: Any,
        tally: _broadcasts.Tally,
    ) -> None:
        self._session = session
        self._options = options
        self._replies = replies
        self._owner = owner
        self._tally = tally
        self._lazy: dict[str, asyncio.Future[Any]] = {}
        self._task_queues: list[RmqTaskQueue] = []
        #: set by the communicator's ``disconnect``
        self.closed = False

    def ensure_open(self) -> None:
        """:raises CommunicatorClosed: once :attr:`closed` is set."""
        if self.closed:
            raise exceptions.CommunicatorClosed

    async def _get(self, name: str, make: Callable[[], Awaitable[T]]) -> T:
        """:returns: the component *name*, made (once, even with concurrent callers) by
        *make*; a failed attempt is retried by the next call."""
        self.ensure_open()
        future = self._lazy.get(name)
        if future is None or (future.done() and future.exception() is not None):
            future = self._lazy[name] = asyncio.ensure_future(make())
        if not future.done():
            await asyncio.shield(future)
        return cast(T, future.result())

    def _made(self, name: str) -> Any:
        """:returns: the component *name* if it was made and nothing is closed, else
        ``None``."""
        future = self._lazy.get(name)
        if self.closed or future is None or not future.done() or future.exception():
            return None
        return future.result()

    async def message_publisher(self) -> RmqPublisher:
        """:returns: the RPC/broadcast publisher, created on first use."""

        async def make() -> RmqPublisher:
            publisher = RmqPublisher(
                self._session, self._options["message_exchange"], replies=self._replies
            )
            await publisher.connect()
            return publisher

        return await self._get("publisher", make)

    async def message_subscriber(self) -> RmqSubscriber:
        """:returns: the RPC/broadcast subscriber, created on first use."""

        async def make() -> RmqSubscriber:
            subscriber = RmqSubscriber(
                self._session,
                self._options["message_exchange"],
                self._options["queue_expires"],
                owner=self._owner,
                tally=self._tally,
            )
            await subscriber.connect()
            return subscriber

        return await self._get("subscriber", make)

    async def default_task_queue(self) -> RmqTaskQueue:
        """:returns: the task queue named by the ``task_queue`` option, declared on first use."""
        options = self._options

        async def make() -> RmqTaskQueue:
            return await self._make_task_queue(
                options["task_queue"], options["task_prefetch_size"], options["task_prefetch_count"]
            )

        return await self._get("tasks", make)

    async def task_queue(
        self, queue_name: str, prefetch_size: int, prefetch_count: int
    ) -> RmqTaskQueue:
        """:returns: a new handle on the task queue *queue_name* (declared if missing),
        disconnected by :meth:`stop`."""
        self.ensure_open()
        queue = await self._make_task_queue(queue_name, prefetch_size, prefetch_count)
        self._task_queues.append(queue)
        return queue

    async def _make_task_queue(
        self, queue_name: str, prefetch_size: int, prefetch_count: int
    ) -> RmqTaskQueue:
        queue = RmqTaskQueue(
            self._session,
            self._options["task_exchange"],
            queue_name,
            prefetch_size=prefetch_size,
            prefetch_count=prefetch_count,
            owner=self._owner,
            replies=self._replies,
        )
        await queue.connect()
        return queue

    def message_target(self) -> Optional[MessageTarget]:
        """:returns: the publisher's target for the quick lane, if it was made."""
        publisher: Optional[RmqPublisher] = self._made("publisher")
        if publisher is None:
            return None
        target: MessageTarget = publisher.target()
        return target

    def default_task_target(self) -> Optional[TaskTarget]:
        """:returns: the default task queue's target for the quick lane, if it was made."""
        queue: Optional[RmqTaskQueue] = self._made("tasks")
        return None if queue is None else queue.target()

    async def stop(self) -> None:
        """Disconnect every component made, then close the reply queue."""
        components = [f.result() for f in self._lazy.values() if f.done() and not f.exception()]
        for component in components + list(self._task_queues):
            if isinstance(component, RmqPublisher):
                continue  # its only state is the shared reply queue, closed below
            try:
                await component.disconnect()
            except exceptions.KiwiError as exc:
                _LOGGER.debug("while disconnecting %r: %s", component, exc)
        await self._replies.close()
