"""The blocking views of a task queue (:class:`ThreadTaskQueue`) and of a task taken from it
in pull mode (:class:`ThreadIncomingTask`), for the thread facade (:mod:`kiwipy._thread`,
which re-exports them): each call is one delegation through the facade's
:class:`~kiwipy._bridge.Bridge`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Optional

from . import exceptions
from ._async_interfaces import AsyncIncomingTask, AsyncTaskQueue
from ._bridge import Bridge
from ._portal import to_asyncio
from ._raised import set_exception
from ._subscribers import TaskSubscriber

__all__ = ("ThreadIncomingTask", "ThreadTaskQueue")


class ThreadTaskQueue:
    """The blocking view of a named task queue (``RmqThreadTaskQueue`` in kiwipy 0.9)."""

    def __init__(self, core_queue: AsyncTaskQueue, bridge: Bridge, owner: Any) -> None:
        self._core = core_queue
        self._bridge = bridge
        self._owner = owner

    def __iter__(self) -> Iterator[ThreadIncomingTask]:
        iterator = self._core.__aiter__()
        try:
            while True:
                try:
                    task = self._bridge.call(iterator.__anext__)
                except StopAsyncIteration:
                    return
                yield ThreadIncomingTask(task, self._bridge)
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None and not self._bridge.closed:
                self._bridge.call(aclose)

    def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[concurrent.futures.Future[Any]]:
        now = getattr(self._core, "task_send_now", None)  # the shared core's, on this thread
        if now is not None:
            direct: Optional[concurrent.futures.Future[Any]] = self._bridge.now(
                now, task, no_reply, timeout=timeout
            )
            return direct
        send = functools.partial(self._core.task_send, timeout=timeout)
        result: Optional[concurrent.futures.Future[Any]] = self._bridge.send(send, task, no_reply)
        return result

    def task_send_many(
        self, tasks: Iterable[Any], no_reply: bool = False, *, call_timeout: Optional[float] = None
    ) -> list[Optional[concurrent.futures.Future[Any]]]:
        """Queue *tasks* here; see :meth:`ThreadCommunicator.task_send_many`."""
        deadline = {} if call_timeout is None else {"call_timeout": call_timeout}
        return self._bridge.send_many(self._core, "task_send_many", tasks, no_reply, **deadline)

    def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        wrapped = self._bridge.wrap(self._owner, subscriber)
        return self._bridge.call(self._core.add_task_subscriber, wrapped, identifier)

    def remove_task_subscriber(self, identifier: Any) -> None:
        self._bridge.call(self._core.remove_task_subscriber, identifier)

    @contextlib.contextmanager
    def next_task(
        self, timeout: Optional[float] = None, fail: bool = True
    ) -> Iterator[Optional[ThreadIncomingTask]]:
        """Context manager yielding the next task; see
        :meth:`kiwipy.communications.AsyncTaskQueue.next_task`.

        :param timeout: seconds to wait for a task to arrive; ``None`` (the default, as in
            kiwipy 0.9): do not wait, raise :class:`~kiwipy.QueueEmpty` at once if the queue
            is empty. This wait is the call's own: the call timeout (``async_task_timeout``)
            comes on top of it and never cuts it short.
        """
        manager = self._core.next_task(fail=fail, timeout=timeout)
        bridge = self._bridge
        task = bridge.call(manager.__aenter__, wait=timeout or 0.0)
        try:
            yield None if task is None else ThreadIncomingTask(task, bridge)
        except BaseException:
            if bridge.closed or not bridge.call(manager.__aexit__, *sys.exc_info()):
                raise
        else:
            if not bridge.closed:  # closed in the block: the task went back with the connection
                bridge.call(manager.__aexit__, None, None, None)


class ThreadIncomingTask:
    """The blocking view of a task taken in pull mode (``RmqThreadIncomingTask``)."""

    def __init__(self, core_task: AsyncIncomingTask, bridge: Bridge) -> None:
        self._core = core_task
        self._bridge = bridge

    @property
    def body(self) -> Any:
        return self._core.body

    @property
    def no_reply(self) -> bool:
        return self._core.no_reply

    @property
    def state(self) -> str:
        return self._core.state

    def process(self) -> concurrent.futures.Future[Any]:
        """Start processing; resolve the returned future with the task's outcome (cancelling
        it cancels the sender's future and finishes the task). Dropping it unresolved
        (garbage collection) requeues the task."""

        async def start() -> asyncio.Future[Any]:
            return self._core.process()

        if self._bridge.closed:
            raise exceptions.CommunicatorClosed
        outcome: asyncio.Future[Any] = self._bridge.portal.call(start, timeout=self._bridge.timeout)
        loop = outcome.get_loop()
        # Left pending (not running), so that cancelling it cancels the task's outcome.
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def forward(done: concurrent.futures.Future[Any]) -> None:
            loop.call_soon_threadsafe(_settle, outcome, done, loop)

        # ``forward`` is the only strong reference to the core's outcome: when the caller drops
        # ``result`` unresolved, the outcome is collected too and the core requeues the task.
        result.add_done_callback(forward)
        return result

    def requeue(self) -> None:
        """Give the task back to the queue."""
        self._bridge.call(self._core.requeue)

    @contextlib.contextmanager
    def processing(self) -> Iterator[concurrent.futures.Future[Any]]:
        """Context manager yielding the outcome future; an exception in the block becomes the
        task's exception (sent to the requester) and is re-raised; an unresolved outcome at
        exit requeues the task."""
        outcome = self.process()
        try:
            yield outcome
        except Exception as exc:
            if not outcome.done():
                outcome.set_exception(exc)
            raise
        finally:
            if not outcome.done():
                self.requeue()


def _settle(outcome: asyncio.Future[Any], done: concurrent.futures.Future[Any], loop: Any) -> None:
    if outcome.done():
        return
    if done.cancelled():
        outcome.cancel()
    elif done.exception() is not None:
        set_exception(outcome, done.exception())  # type: ignore[arg-type]
    else:
        result = done.result()
        if isinstance(result, concurrent.futures.Future):
            result = to_asyncio(result, loop)
        outcome.set_result(result)
