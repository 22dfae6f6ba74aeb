"""The thread facade: a blocking :class:`~kiwipy.Communicator` over any asyncio core.

Invariants:

* Every public call is one delegation through :meth:`ThreadCommunicator._call`, which does
  the closed check, runs the core's coroutine on the private loop thread with the call
  timeout, and converts asyncio futures in the result into :class:`concurrent.futures.Future`.
* User subscribers never run on the loop thread, so they cannot starve heartbeats and may
  call this blocking API themselves. They run on a thread pool; calls for one RPC or
  broadcast subscriber are serialised in arrival order, task subscribers may run
  concurrently (up to the queue's prefetch).
* Futures a subscriber returns (concurrent or asyncio, nested) are converted back for the
  core, which sends one ``pending`` per level as kiwipy 0.9 does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import sys
from collections.abc import Awaitable, Iterator
from typing import Any, Callable, Optional, TypeVar

from . import exceptions
from ._portal import LoopThread, to_asyncio, to_concurrent
from .communications import (
    AsyncCommunicator,
    AsyncIncomingTask,
    AsyncTaskQueue,
    BroadcastSubscriber,
    Communicator,
    RpcSubscriber,
    TaskSubscriber,
)

__all__ = ("ThreadCommunicator", "ThreadIncomingTask", "ThreadTaskQueue")

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0


def _thread_world(value: Any) -> Any:
    return to_concurrent(value) if isinstance(value, asyncio.Future) else value


class _Bridge:
    """What the facade objects share: the loop thread, the subscriber pool and the timeout."""

    def __init__(self, name: str, timeout: float) -> None:
        self.portal = LoopThread(name)
        self.pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix=f"{name} callbacks")
        self.timeout = timeout
        self.closed = False
        self._lanes: dict[Any, asyncio.Lock] = {}

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> Any:
        if self.closed:
            raise exceptions.CommunicatorClosed
        return _thread_world(self.portal.call(fn, *args, timeout=self.timeout))

    def wrap(
        self, owner: Any, subscriber: Callable[..., Any], lane: Any = None
    ) -> Callable[..., Any]:
        """:returns: a coroutine function for the core that runs ``subscriber(owner, *args)``
        on the pool (serialised per *lane* unless it is ``None``)."""

        async def run(_core: Any, *args: Any) -> Any:
            loop = asyncio.get_running_loop()
            call = functools.partial(subscriber, owner, *args)
            if lane is None:
                result = await loop.run_in_executor(self.pool, call)
            else:
                async with self._lanes.setdefault(lane, asyncio.Lock()):
                    result = await loop.run_in_executor(self.pool, call)
            if isinstance(result, concurrent.futures.Future):
                return to_asyncio(result, loop)
            return result

        return run

    def close(self, disconnect: Callable[[], Awaitable[Any]]) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.portal.call(disconnect, timeout=self.timeout)
        except Exception:  # the communicator is going away whatever happened
            pass
        finally:
            self.portal.stop(self.timeout)
            self.pool.shutdown(wait=False)


class ThreadCommunicator(Communicator):
    """A blocking communicator running an :class:`~kiwipy.communications.AsyncCommunicator`
    on a private event loop thread.

    :param core_factory: coroutine function creating the connected core (run on the loop).
    :param timeout: seconds any call may take (``async_task_timeout`` in kiwipy 0.9);
        :data:`kiwipy.TimeoutError` past it.
    :param name: the loop thread's name.
    """

    def __init__(
        self,
        core_factory: Callable[[], Awaitable[AsyncCommunicator]],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        name: str = "kiwipy communicator",
    ) -> None:
        self._bridge = _Bridge(name, timeout)
        self._loop = self._bridge.portal.loop
        try:
            self._core: AsyncCommunicator = self._bridge.portal.call(core_factory, timeout=timeout)
        except BaseException:
            self._bridge.portal.stop()
            self._bridge.pool.shutdown(wait=False)
            raise

    @property
    def core(self) -> AsyncCommunicator:
        """The asyncio communicator behind this facade (use it only on :meth:`loop`)."""
        return self._core

    def loop(self) -> asyncio.AbstractEventLoop:
        """:returns: the private event loop (a method, as in kiwipy 0.9)."""
        return self._loop

    def is_closed(self) -> bool:
        return self._bridge.closed

    def close(self) -> None:
        self._bridge.close(self._core.disconnect)

    def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> Any:
        lane = ("rpc", identifier if identifier is not None else id(subscriber))
        wrapped = self._bridge.wrap(self, subscriber, lane)
        return self._bridge.call(self._core.add_rpc_subscriber, wrapped, identifier)

    def remove_rpc_subscriber(self, identifier: Any) -> None:
        self._bridge.call(self._core.remove_rpc_subscriber, identifier)

    def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        wrapped = self._bridge.wrap(self, subscriber)
        return self._bridge.call(self._core.add_task_subscriber, wrapped, identifier)

    def remove_task_subscriber(self, identifier: Any) -> None:
        self._bridge.call(self._core.remove_task_subscriber, identifier)

    def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> Any:
        lane = ("broadcast", identifier if identifier is not None else id(subscriber))
        wrapped = self._bridge.wrap(self, subscriber, lane)
        return self._bridge.call(self._core.add_broadcast_subscriber, wrapped, identifier)

    def remove_broadcast_subscriber(self, identifier: Any) -> None:
        self._bridge.call(self._core.remove_broadcast_subscriber, identifier)

    def task_send(
        self, task: Any, no_reply: bool = False
    ) -> Optional[concurrent.futures.Future[Any]]:
        result: Optional[concurrent.futures.Future[Any]] = self._bridge.call(
            self._core.task_send, task, no_reply
        )
        return result

    def rpc_send(self, recipient_id: Any, msg: Any) -> concurrent.futures.Future[Any]:
        result: concurrent.futures.Future[Any] = self._bridge.call(
            self._core.rpc_send, recipient_id, msg
        )
        return result

    def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        result = self._bridge.call(self._core.broadcast_send, body, sender, subject, correlation_id)
        return bool(result)

    def task_queue(
        self, queue_name: str, prefetch_size: int = 0, prefetch_count: int = 0
    ) -> ThreadTaskQueue:
        """:returns: the task queue *queue_name* (declared if needed), for sending and for
        consuming in push or pull mode."""
        core_queue = self._bridge.call(
            self._core.task_queue, queue_name, prefetch_size, prefetch_count
        )
        return ThreadTaskQueue(core_queue, self._bridge, self)


class ThreadTaskQueue:
    """The blocking view of a named task queue (``RmqThreadTaskQueue`` in kiwipy 0.9)."""

    def __init__(self, core_queue: AsyncTaskQueue, bridge: _Bridge, owner: Any) -> None:
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
        self, task: Any, no_reply: bool = False
    ) -> Optional[concurrent.futures.Future[Any]]:
        result: Optional[concurrent.futures.Future[Any]] = self._bridge.call(
            self._core.task_send, task, no_reply
        )
        return result

    def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        wrapped = self._bridge.wrap(self._owner, subscriber)
        return self._bridge.call(self._core.add_task_subscriber, wrapped, identifier)

    def remove_task_subscriber(self, identifier: Any) -> None:
        self._bridge.call(self._core.remove_task_subscriber, identifier)

    @contextlib.contextmanager
    def next_task(
        self, timeout: float = 5.0, fail: bool = True
    ) -> Iterator[Optional[ThreadIncomingTask]]:
        """Context manager yielding the next task; see
        :meth:`kiwipy.communications.AsyncTaskQueue.next_task`."""
        manager = self._core.next_task(fail=fail, timeout=timeout)
        bridge = self._bridge
        task = bridge.call(manager.__aenter__)
        try:
            yield None if task is None else ThreadIncomingTask(task, bridge)
        except BaseException:
            if not bridge.call(manager.__aexit__, *sys.exc_info()):
                raise
        else:
            bridge.call(manager.__aexit__, None, None, None)


class ThreadIncomingTask:
    """The blocking view of a task taken in pull mode (``RmqThreadIncomingTask``)."""

    def __init__(self, core_task: AsyncIncomingTask, bridge: _Bridge) -> None:
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
        """Start processing; resolve the returned future with the task's outcome. Dropping it
        unresolved (garbage collection) requeues the task."""

        async def start() -> asyncio.Future[Any]:
            return self._core.process()

        outcome: asyncio.Future[Any] = self._bridge.portal.call(start, timeout=self._bridge.timeout)
        loop = outcome.get_loop()
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        result.set_running_or_notify_cancel()

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
        outcome.set_exception(done.exception())  # type: ignore[arg-type]
    else:
        result = done.result()
        if isinstance(result, concurrent.futures.Future):
            result = to_asyncio(result, loop)
        outcome.set_result(result)
