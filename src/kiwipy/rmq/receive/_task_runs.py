"""Push mode of :class:`kiwipy.rmq.tasks.RmqTaskSubscriber`: running each task its consumer
(:mod:`kiwipy.rmq.receive._task_consumer`) delivers.

Invariants:

* Every task delivered is decoded (a body that cannot be is parked) and *screened*
  (:mod:`kiwipy.rmq.leases._lease_tasks`) before it runs.
* Subscribers are tried in the order they were added; :class:`~kiwipy.TaskRejected` passes the
  task to the next one, any other outcome is final, and a task nobody took is given back.
  The sender's deadline bounds each call, except for a taken-over lease.
* With leases enabled, each run is a task of its own, cancelled only by :meth:`TaskRuns.cancel`
  (a lease may outlive its delivery); without, it runs in aiormq's task of the channel.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Optional

import aiormq.abc

from ... import _deadlines
from ..._incoming import run_subscribers
from .. import _traced, protocol
from ..leases._leases import read_lease
from . import _outcome
from ._incoming import RmqIncomingTask, TaskResponder
from ._task_consumer import TaskConsumer

__all__ = ("TaskRuns",)


class TaskRuns:
    """The runs of the tasks pushed to one task subscriber.

    :param responder: answers, acknowledges and screens the tasks.
    :param consumer: the consumer of the queue (its slots count running tasks).
    :param subscribers: the subscribers by identifier (the subscriber's own dict, read on
        each task).
    :param owner: first argument of every subscriber call.
    :param queue_name: the task queue (for traces).
    """

    def __init__(
        self,
        responder: TaskResponder,
        consumer: TaskConsumer,
        subscribers: dict[Any, Any],
        owner: Any,
        queue_name: str,
    ) -> None:
        self.responder = responder
        self._consumer = consumer
        self._subscribers = subscribers
        self._owner = owner
        self._queue_name = queue_name
        self._handlers: set[asyncio.Task[Any]] = set()
        self._runs: set[asyncio.Future[None]] = set()

    async def on_task(self, message: aiormq.abc.DeliveredMessage) -> None:
        """Run the task *message* delivered (module doc)."""
        handling = _traced.delivery(self._handle(message), "task", self._queue_name, message)
        if not self.responder.leases.settings.enabled:
            with _outcome.tracked(self._handlers):
                await handling
            return
        # aiormq runs this callback in a task of the channel, cancelled when the channel
        # closes: a run that may outlive its delivery (a lease, a channel closed for a
        # delivery timeout) runs in a task of its own, cancelled only by :meth:`cancel`
        # (the subscriber's disconnect).
        run = asyncio.ensure_future(handling)
        self._runs.add(run)
        run.add_done_callback(self._runs.discard)

    async def _handle(self, message: aiormq.abc.DeliveredMessage) -> None:
        body = await self.responder.decode(message)
        if body is None:
            return  # parked
        if not await self.responder.leases.screen(message):
            return  # a lease that was checked, or a task that already runs here
        incoming = RmqIncomingTask(self.responder, message, body)
        running = incoming.begin()
        slot = self._consumer.task_started(message)
        if running is not None and slot:
            running.on_leased = functools.partial(self._consumer.task_leased, slot)
        try:
            outcome = await self._run_subscribers(incoming, message)
            _traced.outcome(outcome)
            if outcome is None:
                await incoming.give_back()
            else:
                await incoming.finish(outcome)
        finally:
            incoming.abandon()  # only if cancelled before its end: others may take it
            self._consumer.task_ended(slot, running is not None and running.leased)

    async def _run_subscribers(
        self, incoming: RmqIncomingTask, message: aiormq.abc.DeliveredMessage
    ) -> Optional[_outcome.Outcome]:
        pending = None
        headers = message.header.properties.headers
        taken_over = read_lease(headers) is not None
        # A take-over does not say 'pending' again: the sender may already have had it.
        if not incoming.no_reply and not taken_over:
            pending = functools.partial(self.responder.reply, message, protocol.pending_response())
        # a taken-over task started in time: its deadline no longer counts
        at = None if taken_over else _deadlines.from_headers(headers)
        args = (self._owner, incoming.body)
        return await run_subscribers(self._subscribers.values(), args, pending, at)

    def cancel(self) -> None:
        """Cancel the runs in tasks of their own (leased ones are taken over by others after
        ``lease_strikes`` checks)."""
        for run in list(self._runs):
            run.cancel()
