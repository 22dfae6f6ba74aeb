"""The thread facade: a blocking :class:`~kiwipy.Communicator` over any asyncio core.

Invariants:

* Every public call is one delegation through the bridge (:mod:`kiwipy._bridge`), which does the
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

The blocking views of a task queue and of a task pulled from it are in
:mod:`kiwipy._thread_queue` (re-exported here).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Awaitable, Iterable
from typing import Any, Callable, Optional

from . import _broadcasts, _quick, _tracing
from ._bridge import Bridge
from ._thread_queue import ThreadIncomingTask, ThreadTaskQueue
from .communications import (
    AsyncCommunicator,
    BroadcastSubscriber,
    Communicator,
    RpcSubscriber,
    TaskSubscriber,
)

__all__ = ("ThreadCommunicator", "ThreadIncomingTask", "ThreadTaskQueue")

DEFAULT_TIMEOUT = 5.0


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
        self._bridge = Bridge(name, timeout)
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
        # sends a core can make on the caller's thread (the shared core's: kiwipy.core._sending)
        self._broadcast_now: Optional[Callable[..., bool]] = getattr(
            self._core, "broadcast_now", None
        )
        self._task_send_now: Optional[Callable[..., Any]] = getattr(
            self._core, "task_send_now", None
        )
        self._rpc_send_now: Optional[Callable[..., Any]] = getattr(self._core, "rpc_send_now", None)
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
        if self._task_send_now is not None:
            direct: Optional[concurrent.futures.Future[Any]] = self._bridge.now(
                self._task_send_now, task, no_reply, timeout=timeout
            )
            return direct
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
        if self._rpc_send_now is not None:
            direct: concurrent.futures.Future[Any] = self._bridge.now(
                self._rpc_send_now, recipient_id, msg, timeout=timeout
            )
            return direct
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
        now = self._broadcast_now
        if now is not None and not _tracing.ENABLED:
            # on this thread: the broker hands it to this communicator's own subscribers
            # here too, so the barrier below sees them (kiwipy._broadcasts)
            sent = bool(self._bridge.now(now, *args))
        elif lane is None:
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


def _lane_key(identifier: Any, subscriber: Any) -> Any:
    """:returns: the key serialising one subscriber's calls: its identifier as a string (the
    cores compare identifiers as strings, and any value is accepted, unhashable ones too)."""
    return id(subscriber) if identifier is None else str(identifier)
