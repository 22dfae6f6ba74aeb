"""The life cycle of a task, written once for every transport: in push mode the subscribers
a task is offered to (:func:`run_subscribers`), in pull mode :class:`IncomingTask`.

In push mode the subscribers of a queue are tried in the order they were added: the first
outcome that is not ``TaskRejected`` is the task's (replied, then acknowledged); if every one
rejects it, the transport gives it back for another consumer.

In pull mode:

``state`` goes ``'pending'`` → ``'processing'`` (:meth:`IncomingTask.process`) →
``'finished'`` once the outcome future is resolved, or to ``'requeued'`` when the task is
given back: by :meth:`~IncomingTask.requeue`, by :meth:`~IncomingTask.processing` left with
the outcome unresolved, or when the caller lets go of an unresolved outcome future (it is
held weakly: the garbage collector's callback gives the task back).

Cancelling the outcome future cancels the task's outcome: the sender's future is cancelled
and the task is finished (:mod:`kiwipy._outcome`). A transport says only how a task starts
(:meth:`~IncomingTask._begin`), how its outcome is replied and acknowledged
(:meth:`~IncomingTask._finish`) and how it is given back (:meth:`~IncomingTask._give_back`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any, Callable, Optional

from . import _deadlines
from ._outcome import REJECTED, Outcome, invoke, outcome_of
from ._raised import set_exception
from ._task_state import (
    TASK_FINISHED,
    TASK_PENDING,
    TASK_PROCESSING,
    TASK_REQUEUED,
    expect_state,
)
from .communications import AsyncIncomingTask

__all__ = ("IncomingTask", "run_subscribers")


async def run_subscribers(
    subscribers: Iterable[Any],
    args: tuple[Any, ...],
    on_pending: Optional[Callable[[], Awaitable[Any]]],
    deadline: Optional[float],
) -> Optional[Outcome]:
    """Offer a task to *subscribers* in turn, each call bounded by *deadline*
    (:func:`kiwipy._deadlines.bounded`; *on_pending* sends the ``pending`` reply when one
    returns a future).

    :returns: the first outcome that is not ``TaskRejected``; ``None`` if every subscriber
        rejected the task.
    """
    for subscriber in list(subscribers):
        outcome = await _deadlines.bounded(deadline, invoke(subscriber, args, on_pending))
        if outcome.kind != REJECTED:
            return outcome
    return None


class IncomingTask(AsyncIncomingTask, abc.ABC):
    """A task taken in pull mode (module doc).

    :param loop: the loop of the communicator that took it.
    :param body: the task.
    :param no_reply: its sender expects no reply.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, body: Any, no_reply: bool) -> None:
        self._loop = loop
        self._body = body
        self._no_reply = no_reply
        self._state = TASK_PENDING
        # Only a weak reference: dropping the outcome unresolved must requeue the task.
        self._outcome_ref: Optional[weakref.ref[asyncio.Future[Any]]] = None
        self._ending: set[asyncio.Task[Any]] = set()

    @property
    def body(self) -> Any:
        return self._body

    @property
    def no_reply(self) -> bool:
        return self._no_reply

    @property
    def state(self) -> str:
        return self._state

    # What a transport supplies

    @abc.abstractmethod
    def _check_open(self) -> None:
        """:raises CommunicatorClosed: if the communicator that took the task was closed."""

    def _begin(self) -> None:
        """The task starts being processed (nothing by default)."""

    def _hold(self, held: bool) -> None:
        """Keep the task reachable while it is processed (nothing by default)."""

    @abc.abstractmethod
    async def _finish(self, outcome: Outcome) -> None:
        """Reply with the final *outcome* (unless ``no_reply``), then acknowledge the task."""

    @abc.abstractmethod
    async def _give_back(self) -> None:
        """Put the task back in its queue."""

    # The life cycle

    def process(self) -> asyncio.Future[Any]:
        """:returns: the outcome future; resolving it replies to the requester and acks.

        :raises InvalidStateError: unless the task is pending.
        :raises CommunicatorClosed: if the communicator was closed.
        """
        self._check_open()
        expect_state(self._state, "process", TASK_PENDING)
        self._state = TASK_PROCESSING
        self._begin()
        outcome: asyncio.Future[Any] = self._loop.create_future()
        outcome.add_done_callback(self._on_outcome)
        self._outcome_ref = weakref.ref(outcome, self._on_outcome_lost)
        self._hold(True)  # keeps the weak reference (and its callback) alive
        return outcome

    async def requeue(self) -> None:
        """Give the task back to its queue.

        :raises InvalidStateError: unless the task is pending or processing.
        """
        expect_state(self._state, "requeue", TASK_PENDING, TASK_PROCESSING)
        await self._requeue_now()

    @contextlib.asynccontextmanager
    async def processing(self) -> AsyncIterator[asyncio.Future[Any]]:
        """Async context manager yielding the outcome future. An exception in the block is
        the task's outcome (sent to the requester) and is re-raised; an outcome still
        unresolved at exit requeues the task. Leaving the block waits for the reply and
        acknowledgement."""
        outcome = self.process()
        try:
            yield outcome
        except Exception as exc:
            if not outcome.done():
                set_exception(outcome, exc)
            raise
        finally:
            if outcome.done():
                await asyncio.sleep(0)  # let the outcome's done callback start the finish
                if self._ending:
                    await asyncio.wait(list(self._ending))
            else:
                await self._requeue_now()

    async def _requeue_now(self) -> None:
        if self._state not in (TASK_PENDING, TASK_PROCESSING):
            return
        self._state = TASK_REQUEUED
        self._outcome_ref = None
        self._hold(False)
        await self._give_back()

    def _on_outcome(self, outcome: asyncio.Future[Any]) -> None:
        if self._state != TASK_PROCESSING:
            return
        self._state = TASK_FINISHED
        self._outcome_ref = None
        self._hold(False)
        self._spawn(self._finish(outcome_of(outcome)))

    def _on_outcome_lost(self, ref: weakref.ref[asyncio.Future[Any]]) -> None:
        # Called by the garbage collector, on whatever thread it runs.
        if self._outcome_ref is not ref:
            return
        try:
            self._loop.call_soon_threadsafe(self._requeue_if_processing)
        except RuntimeError:  # loop closed: closing the connection gave the task back already
            pass

    def _requeue_if_processing(self) -> None:
        if self._state == TASK_PROCESSING:
            self._spawn(self._requeue_now())

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)
