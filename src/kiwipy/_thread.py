"""The thread facade: a blocking :class:`~kiwipy.Communicator` over any asyncio core.

Invariants:

* Every public call is one delegation through the bridge (``_Bridge``), which does the
  closed check, runs the core's coroutine on the private loop thread with the call timeout,
  and converts asyncio futures in the result into :class:`concurrent.futures.Future` (on
  the loop thread). Sends may take a core's quick lane instead (:mod:`kiwipy._quick`):
  encoded on the caller's thread, published in one step, the same outcome.
* User subscribers never run on the loop thread, so they cannot starve heartbeats and may
  call this blocking API themselves. They run on worker threads (:mod:`kiwipy._dispatch`);
  calls for one RPC or broadcast subscriber are serialised in arrival order, task
  subscribers may run concurrently (up to the queue's prefetch).
* Futures a subscriber returns (concurrent or asyncio, nested) are converted back for the
  core, which sends one ``pending`` per level as kiwipy 0.9 does.
* A blocking ``broadcast_send`` (or ``broadcast_send_many``) returns only once this
  communicator's broadcast subscribers handled every broadcast it had received by the time
  the send was confirmed (the core's :class:`~kiwipy._broadcasts.Tally`), as with kiwipy 0.9,
  which ran them on the loop: at most one call timeout more, never an error, and not at all
  from one of its own subscribers (which could be what is waited for).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import sys
import threading
import time
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any, Callable, Optional, TypeVar

from . import _broadcasts, _deadlines, _quick, _tracing, exceptions
from ._dispatch import OFFLOADED, Dispatcher
from ._portal import LoopThread, thread_world, to_asyncio
from ._raised import set_exception
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


class _Bridge:
    """What the facade objects share: the loop thread, the subscriber workers and the
    timeouts."""

    def __init__(self, name: str, timeout: float) -> None:
        self.portal = LoopThread(name)
        self.dispatch = Dispatcher(self.portal.loop, f"{name} callbacks")
        self.timeout = timeout
        #: Seconds a send may take: a core may wait for a lost connection to come back
        #: before it confirms or raises (the RMQ facade sets ``recovery_timeout`` + 1 here).
        self.send_timeout = timeout
        self.closed = False

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, wait: float = 0.0) -> Any:
        """Run ``fn(*args)`` on the loop within the call timeout.

        :param wait: seconds the call itself may wait on purpose (its own ``timeout``,
            e.g. ``next_task(timeout=...)``): added to the call timeout, so the call's own
            outcome (``QueueEmpty``) always comes before the facade's
            :data:`kiwipy.TimeoutError`.
        """
        if self.closed:
            raise exceptions.CommunicatorClosed
        timeout = self.timeout + max(0.0, wait)
        return self.portal.call(fn, *args, timeout=timeout, convert=thread_world)

    def send(self, fn: Callable[..., Awaitable[T]], *args: Any) -> Any:
        """:meth:`call` for a send, with the longer of the two timeouts: a send during an
        outage ends with the core's own outcome, not with a :data:`kiwipy.TimeoutError`."""
        if self.closed:
            raise exceptions.CommunicatorClosed
        timeout = max(self.timeout, self.send_timeout)
        return self.portal.call(fn, *args, timeout=timeout, convert=thread_world)

    def quick_send(
        self,
        body: Optional[bytes],
        start: Callable[[_quick.Done], bool],
        prime: Callable[[], None],
        send: Callable[..., Awaitable[Any]],
        *args: Any,
    ) -> Any:
        """``send(*args)`` through a core's quick lane (:mod:`kiwipy._quick`), with *body*
        already encoded on the caller's thread (``None``: the lane is not ready, so the
        core sends it and ``prime()`` follows)."""
        if self.closed:
            raise exceptions.CommunicatorClosed
        timeout = max(self.timeout, self.send_timeout)
        fallback = functools.partial(send, *args)
        if body is None:
            return self.portal.call(
                _quick.send_slowly, fallback, prime, timeout=timeout, convert=thread_world
            )
        return _quick.send(self.portal, start, fallback, prime, thread_world, timeout)

    def send_many(
        self, core: Any, name: str, items: Iterable[Any], *args: Any, **kwargs: Any
    ) -> list[Any]:
        """``core.<name>(items, *args)`` (``task_send_many``, ``rpc_send_many`` or
        ``broadcast_send_many``) with thread-world futures.

        The batch gets a single send's bound plus :data:`_quick.BATCH_TIMEOUT_PER_TASK` per
        message, and the core enforces it itself: when it runs out, the core's
        :class:`~kiwipy.BatchSendError` says which messages went out and keeps their futures.
        The facade waits one call timeout longer for that report; only a loop that does not
        answer at all ends in a bare :data:`kiwipy.TimeoutError`.
        """
        if self.closed:
            raise exceptions.CommunicatorClosed
        send_many = getattr(core, name, None)
        if send_many is None:
            raise NotImplementedError(f"{type(core).__name__} has no {name}")
        if kwargs:
            send_many = functools.partial(send_many, **kwargs)
        items = list(items)
        bound = self.batch_timeout(len(items))
        run = functools.partial(_quick.send_many, send_many, items, *args, timeout=bound)
        result: list[Any] = self.portal.call(run, timeout=bound + self.timeout)
        return result

    def settle_broadcasts(self, tally: Optional[_broadcasts.Tally]) -> None:
        """The barrier after a broadcast send (module doc), within one call timeout. The
        caller woke up after the confirm was handled on the loop, where deliveries are
        counted as they arrive, so the mark read here covers every broadcast received by
        then; a core's fence (one broker round trip) first lets its own catch up."""
        if tally is None or self.dispatch.in_worker():
            return
        deadline = time.monotonic() + self.timeout
        if tally.fence is None:
            mark = tally.mark()
        else:
            try:
                mark = self.portal.call(tally.fenced_mark, timeout=self.timeout)
            except Exception:  # the send succeeded: the barrier never turns it into an error
                return
        tally.wait(mark, max(0.0, deadline - time.monotonic()))

    def batch_timeout(self, count: int) -> float:
        """:returns: the seconds a batch of *count* messages may take (see :meth:`send_many`)."""
        return max(self.timeout, self.send_timeout) + _quick.BATCH_TIMEOUT_PER_TASK * count

    def wrap(
        self, owner: Any, subscriber: Callable[..., Any], lane: Any = None
    ) -> Callable[..., Any]:
        """:returns: a coroutine function for the core that runs ``subscriber(owner, *args)``
        on the pool (serialised per *lane* unless it is ``None``)."""

        async def run(_core: Any, *args: Any) -> Any:
            # run in this handler's trace context on the worker thread (issue 17)
            call = _tracing.carry(functools.partial(subscriber, owner, *args))
            # the request's deadline: seen on the worker thread, and checked when it starts
            call = _deadlines.guarded(call)
            if lane is None:
                result = await self.dispatch.run(call)
            else:
                result = await self.dispatch.run_serial(lane, call)
            if isinstance(result, concurrent.futures.Future):
                return to_asyncio(result, asyncio.get_running_loop())
            return result

        setattr(run, OFFLOADED, True)
        return run

    def close(self, disconnect: Callable[[], Awaitable[Any]]) -> None:
        if self.closed:
            return
        self.closed = True
        if self.dispatch.in_worker():
            # Called by a subscriber: the close waits for the calls being handled, this one
            # included, so it would wait for itself and its reply would be lost. It goes on in
            # the background, after this call's reply (issue 11 item 6a).
            name = f"{threading.current_thread().name} closing"
            threading.Thread(target=self._close, args=(disconnect,), name=name, daemon=True).start()
            return
        self._close(disconnect)

    def _close(self, disconnect: Callable[[], Awaitable[Any]]) -> None:
        try:
            self.portal.call(disconnect, timeout=self.timeout)
        except Exception:  # the communicator is going away whatever happened
            pass
        finally:
            self.portal.stop(self.timeout)
            self.dispatch.close()


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
            self._bridge.dispatch.close()
            raise

        make_lane = getattr(self._core, "task_lane", None)
        self._task_lane: Optional[_quick.Lane] = make_lane() if callable(make_lane) else None
        make_lane = getattr(self._core, "message_lane", None)
        self._message_lane: Any = make_lane() if callable(make_lane) else None
        make_tally = getattr(self._core, "broadcast_tally", None)
        self._broadcast_tally: Optional[_broadcasts.Tally] = (
            make_tally() if callable(make_tally) else None
        )

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
        lane = ("rpc", _lane_key(identifier, subscriber))
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
        lane = ("broadcast", _lane_key(identifier, subscriber))
        wrapped = self._bridge.wrap(self, subscriber, lane)
        return self._bridge.call(self._core.add_broadcast_subscriber, wrapped, identifier)

    def remove_broadcast_subscriber(self, identifier: Any) -> None:
        self._bridge.call(self._core.remove_broadcast_subscriber, identifier)

    def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[concurrent.futures.Future[Any]]:
        lane = self._task_lane
        if lane is None or timeout is not None:
            # a request with a deadline takes the core's path, which carries it
            send = functools.partial(self._core.task_send, timeout=timeout)
            result: Optional[concurrent.futures.Future[Any]] = self._bridge.send(
                send, task, no_reply
            )
            return result
        body = lane.encode(task, no_reply)
        start = functools.partial(lane.start, body or b"", no_reply)
        quick: Optional[concurrent.futures.Future[Any]] = self._bridge.quick_send(
            body, start, lane.prime, self._core.task_send, task, no_reply
        )
        return quick

    def task_send_many(
        self, tasks: Iterable[Any], no_reply: bool = False, *, call_timeout: Optional[float] = None
    ) -> list[Optional[concurrent.futures.Future[Any]]]:
        """See :meth:`kiwipy.Communicator.task_send_many` (blocking, with the bound of a
        single send extended by :data:`_quick.BATCH_TIMEOUT_PER_TASK` per task; past it,
        :class:`~kiwipy.BatchSendError` says which tasks went out)."""
        deadline = {} if call_timeout is None else {"call_timeout": call_timeout}
        return self._bridge.send_many(self._core, "task_send_many", tasks, no_reply, **deadline)

    def rpc_send(
        self, recipient_id: Any, msg: Any, *, timeout: Optional[float] = None
    ) -> concurrent.futures.Future[Any]:
        lane, send = self._message_lane, self._core.rpc_send
        if lane is None or timeout is not None:
            # a request with a deadline takes the core's path, which carries it
            with_deadline = functools.partial(send, timeout=timeout)
            result: concurrent.futures.Future[Any] = self._bridge.send(
                with_deadline, recipient_id, msg
            )
            return result
        body = lane.encode(msg)
        start = functools.partial(lane.start_rpc, recipient_id, body)
        quick: concurrent.futures.Future[Any] = self._bridge.quick_send(
            body, start, lane.prime, send, recipient_id, msg
        )
        return quick

    def rpc_send_many(
        self, calls: Iterable[tuple[Any, Any]], *, call_timeout: Optional[float] = None
    ) -> list[concurrent.futures.Future[Any]]:
        """See :meth:`kiwipy.Communicator.rpc_send_many` (blocking, bounded as
        :meth:`task_send_many`)."""
        deadline = {} if call_timeout is None else {"call_timeout": call_timeout}
        return self._bridge.send_many(self._core, "rpc_send_many", calls, **deadline)

    def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        """See :meth:`kiwipy.Communicator.broadcast_send`; returns once the broker confirmed
        it and this communicator's own subscribers handled every broadcast it had received
        by then (waiting at most one call timeout for them; not from its own subscribers)."""
        lane, send = self._message_lane, self._core.broadcast_send
        args = (body, sender, subject, correlation_id)
        if lane is None:
            sent = bool(self._bridge.send(send, *args))
        else:
            data = lane.encode(_broadcasts.envelope(*args))
            start = functools.partial(lane.start_broadcast, data)
            sent = bool(self._bridge.quick_send(data, start, lane.prime, send, *args))
        self._bridge.settle_broadcasts(self._broadcast_tally)
        return sent

    def broadcast_send_many(self, broadcasts: Iterable[tuple[Any, ...]]) -> None:
        """See :meth:`kiwipy.Communicator.broadcast_send_many` (blocking, bounded as
        :meth:`task_send_many`; returns once this communicator's own subscribers handled
        what it had received, as :meth:`broadcast_send`)."""
        self._bridge.send_many(self._core, "broadcast_send_many", broadcasts)
        self._bridge.settle_broadcasts(self._broadcast_tally)

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
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[concurrent.futures.Future[Any]]:
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


def _lane_key(identifier: Any, subscriber: Any) -> Any:
    """:returns: the key serialising one subscriber's calls: its identifier as a string (the
    cores compare identifiers as strings, and any value is accepted, unhashable ones too)."""
    return id(subscriber) if identifier is None else str(identifier)
