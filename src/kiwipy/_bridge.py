"""The bridge of the thread facade (:mod:`kiwipy._thread`): one blocking call onto the
private loop thread, with the closed check and the call timeout.

:class:`Bridge` runs a core's coroutine on the loop thread (:mod:`kiwipy._portal`) and converts
asyncio futures in the result into :class:`concurrent.futures.Future`; sends may take a core's
quick lane (:mod:`kiwipy._quick`), batches get a bound of their own, and subscribers are
wrapped to run on worker threads (:mod:`kiwipy._dispatch`), never on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
from collections.abc import Awaitable, Iterable
from typing import Any, Callable, Optional, TypeVar

from . import _broadcasts, _deadlines, _quick, _tracing, exceptions
from ._dispatch import OFFLOADED, SUBMIT, Dispatcher, Done
from ._portal import LoopThread, thread_world, to_asyncio

__all__ = ("Bridge",)

T = TypeVar("T")


class Bridge:
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

    def now(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the caller's thread, after the closed check: a core's
        call that may run on any thread (``broadcast_now``, ``task_send_now``,
        ``rpc_send_now``), its futures already thread-world ones."""
        if self.closed:
            raise exceptions.CommunicatorClosed
        return fn(*args, **kwargs)

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
        on the pool (serialised per *lane* unless it is ``None``; then it also has
        :data:`~kiwipy._dispatch.SUBMIT`, to queue a call from any thread)."""

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
        if lane is not None:

            def submit(args: tuple[Any, ...], done: Done) -> None:
                # a broadcast's call: no deadline, and no trace context to carry (this way
                # is taken only without tracing, kiwipy._broadcasts.hand_over)
                self.dispatch.submit_serial(lane, functools.partial(subscriber, owner, *args), done)

            setattr(run, SUBMIT, submit)
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
