"""Long tasks: a running task becomes a lease, and a worker screens what it receives.

Invariants (the design is ``docs/long-tasks.md``):

1. *Conversion.* A task still running after ``task_lease_after`` seconds is copied, with its
   lease headers, to ``<queue>.leases``; only once the broker has confirmed the copy is the
   delivery acknowledged. A crash in between leaves the delivery unacknowledged (the broker
   gives it to another worker) and possibly a copy, which checks then find finished or take
   over once: nothing is lost. Short tasks pay one timer handle, cancelled when they end.
2. *One run per worker.* A task running here is in the session's table of running tasks
   until it ends. A delivery of a task in that table (the broker redelivering it after closing
   a channel for a delivery timeout, or after ``basic.cancel``) is never run: it becomes this
   run's lease at once (or is dropped if the lease exists), and the run carries on.
3. *Screening.* A received lease copy is never run as it is: its owner is checked and the
   decision of :func:`~kiwipy.rmq.leases._leases.judge` applied. Re-parking publishes (and waits for
   the confirm of) the new copy before the old one is acknowledged, so a lease always has at
   least one copy; a failure in between at worst duplicates it, and the claim keeps a
   take-over single.
4. A leased task's outcome is answered as usual; then its lease is marked ``finished`` so the
   next check drops the copy. If the reply could not be sent, it is marked ``released`` and
   the next check reruns the task elsewhere (the non-leased path requeues it: the same rule).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from typing import Callable, Optional, Protocol

import aiormq.abc
from aiormq import exceptions as amqp_errors

from ... import exceptions
from ..connection import _amqp
from ..connection._session import Session
from ..receive._topology import declare_lease_queue
from ._lease_service import LeaseService, Running
from ._leases import (
    DROP,
    FINISHED,
    RELEASED,
    RENEW,
    RUNNING,
    UNKNOWN,
    Lease,
    copy_properties,
    judge,
    lease_queue,
    read_lease,
    with_lease,
)

__all__ = ("RunningTask", "TaskLeases", "task_key")

_LOGGER = logging.getLogger("kiwipy.rmq.tasks")


def task_key(message: aiormq.abc.DeliveredMessage) -> str:
    """:returns: what identifies one task across its deliveries and copies: its
    ``message_id`` (aiormq gives every message one), else its ``correlation_id``."""
    props = message.header.properties
    return str(props.message_id or props.correlation_id or hash(message.body))


class Settler(Protocol):
    """What the leases need of a task queue's :class:`~kiwipy.rmq.receive._incoming.TaskResponder`
    (a protocol, so that this module does not import the responder's, which imports it)."""

    session: Session
    queue: str

    async def settle(self, message: aiormq.abc.DeliveredMessage, requeue: Optional[bool]) -> None:
        """Acknowledge *message* (``requeue=None``) or nack it."""


class RunningTask:
    """A task running in this worker, and its lease once it has one.

    :param leases: the task queue's :class:`TaskLeases`.
    :param message: the delivery being held.
    :param taken_over: the lease this run took over, if any.
    """

    def __init__(
        self, leases: TaskLeases, message: aiormq.abc.DeliveredMessage, taken_over: Optional[Lease]
    ) -> None:
        self._leases = leases
        self.key = task_key(message)
        self.message = message
        self.taken_over = taken_over
        #: Chosen at the first conversion attempt and kept across retries: a copy whose
        #: confirm was lost may exist, and must keep finding its owner's answer.
        self.lease_id: Optional[str] = None
        self.leased = False
        #: Awaited once the lease exists, before the delivery is acknowledged (so a consumer
        #: can give up the slot before the broker refills it: prefetch accounting).
        self.on_leased: Optional[Callable[[], Awaitable[None]]] = None
        self._ended = False
        self._lock: Optional[asyncio.Lock] = None
        after = leases.settings.after or 0.0
        self._timer: Optional[asyncio.TimerHandle] = leases.session.loop.call_later(
            after, self._on_timer
        )

    def _on_timer(self) -> None:
        self._timer = None
        self._leases.service.spawn(self.convert(self.message))

    async def convert(self, delivery: aiormq.abc.DeliveredMessage) -> None:
        """Make sure this task has a lease, then acknowledge *delivery* (rules 1 and 2)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._ended:
                if delivery is not self.message:
                    # a duplicate of a run that ended here: its outcome is settled already
                    await self._leases.responder.settle(delivery, requeue=None)
                return
            if not self.leased:
                if not await self._make_lease():
                    return
                if self.on_leased is not None:
                    await self.on_leased()
            await self._leases.responder.settle(delivery, requeue=None)

    async def _make_lease(self) -> bool:
        leases, service = self._leases, self._leases.service
        if self.lease_id is None:
            self.lease_id = uuid.uuid4().hex
            service.set_answer(self.lease_id, RUNNING)  # before any copy exists
        count = 0 if self.taken_over is None else self.taken_over.takeovers + 1
        lease = Lease(service.owner, self.lease_id, 0, count)
        try:
            await service.start()
            await leases.park(self.message, lease)
        except exceptions.KiwiError as exc:
            self._retry(exc)
            return False
        self.leased = True
        lease_id = self.lease_id
        _LOGGER.info(
            "task %s of %s runs long: converted into lease %s", self.key, leases.queue, lease_id
        )
        return True

    def _retry(self, exc: BaseException) -> None:
        if self._leases.session.closed or self._ended:
            return
        delay = self._leases.settings.interval / 4
        _LOGGER.warning(
            "task %s not converted into a lease (%s); retrying in %g s", self.key, exc, delay
        )
        self._timer = self._leases.session.loop.call_later(delay, self._on_timer)

    def _stop(self) -> None:
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def abandon(self) -> None:
        """The run was cancelled: end it without waiting, as not answered."""
        self._stop()
        self._leases.ended(self, answered=False)

    async def end(self, answered: bool) -> bool:
        """The run ended; *answered*: its outcome reached the sender (or none was wanted).

        :returns: whether the task was leased (then there is no delivery left to settle).
        """
        self._stop()
        if self._lock is not None:
            async with self._lock:  # let a conversion under way finish first
                pass
        return self._leases.ended(self, answered)


class TaskLeases:
    """The leases of one task queue in one worker.

    :param responder: the task queue's responder (publishing, settling, the session).
    """

    def __init__(self, responder: Settler) -> None:
        self.responder = responder
        self.session = responder.session
        self.queue = responder.queue
        self.service = LeaseService.of(self.session)
        self.settings = self.service.settings

    # Running tasks

    def begin(self, message: aiormq.abc.DeliveredMessage) -> Optional[RunningTask]:
        """Register a task starting to run here. :returns: it, or ``None`` when leases are
        disabled."""
        if not self.settings.enabled:
            return None
        task = RunningTask(self, message, read_lease(message.header.properties.headers))
        self.service.running[(self.queue, task.key)] = task
        return task

    def ended(self, task: RunningTask, answered: bool) -> bool:
        """Bookkeeping when *task* ends; :returns: whether it was leased."""
        key = (self.queue, task.key)
        if self.service.running.get(key) is task:
            del self.service.running[key]
        if task.taken_over is not None:
            # The copy this run took over goes back to the queue only if it was not leased
            # again and has no outcome: then others may claim it at once.
            given_back = not task.leased and not answered
            answer = RELEASED if given_back else FINISHED
            self.service.claims.release(self.queue, task.taken_over.lease_id, answer, given_back)
        if task.lease_id is not None:
            # Not leased: the delivery is still held and settled by the caller (requeued if
            # unanswered), so a copy whose confirm was lost must be dropped, not rerun.
            released = task.leased and not answered
            self.service.set_answer(task.lease_id, RELEASED if released else FINISHED)
        if task.leased:
            return True
        if answered and task.message.channel.is_closed:
            self.service.remember_finished(key)
        return False

    async def park(self, message: aiormq.abc.DeliveredMessage, lease: Lease) -> None:
        """Publish a copy of *message* carrying *lease* to the lease queue, confirmed.

        :raises KiwiError: if it was not confirmed.
        """
        try:
            await declare_lease_queue(self.session, self.queue)
        except amqp_errors.ChannelClosed as exc:  # the broker refused it (permissions, ...)
            raise _amqp.translate(exc, f"declaring {lease_queue(self.queue)!r}") from exc
        props = message.header.properties
        copy = copy_properties(props, with_lease(props.headers, lease))
        await self.session.publish(
            "", lease_queue(self.queue), message.body, copy, mandatory=True, check_size=False
        )

    # Screening what arrives

    async def screen(self, message: aiormq.abc.DeliveredMessage) -> bool:
        """Decide what to do with a received task before anything runs it.

        :returns: ``True`` to run it here (an ordinary task, or a lease this worker just took
            over); ``False`` when it was dealt with (re-parked, dropped, or folded into a run
            of the same task here).
        """
        lease = read_lease(message.header.properties.headers)
        key = (self.queue, task_key(message))
        running = self.service.running.get(key)
        if running is not None:
            await self._fold(running, message, lease)
            return False
        if key in self.service.finished_unacked and message.redelivered:
            _LOGGER.info("dropping a redelivery of task %s: it finished here", key[1])
            await self.responder.settle(message, requeue=None)
            return False
        if lease is None:
            return True
        return await self._check(message, lease)

    async def _fold(
        self, running: Running, message: aiormq.abc.DeliveredMessage, lease: Optional[Lease]
    ) -> None:
        """A task that runs here arrived again (rule 2)."""
        if lease is None:
            _LOGGER.warning(
                "task %s was redelivered while it runs here; converting it into a lease",
                running.key,
            )
            await running.convert(message)
        elif lease.lease_id == running.lease_id:
            await self._repark(message, lease._replace(strikes=0))  # our own lease: renew
        else:
            await self.responder.settle(message, requeue=None)  # a stale copy of an old lease

    async def _check(self, message: aiormq.abc.DeliveredMessage, lease: Lease) -> bool:
        try:
            answer = await self.service.check(lease)
        except exceptions.KiwiError as exc:
            _LOGGER.debug("lease %s not checked (%s); the broker gives it back", lease, exc)
            await self.responder.settle(message, requeue=True)
            return False
        verdict = judge(answer, lease.strikes, self.settings.strikes)
        if verdict.action == RENEW:
            await self._repark(message, lease._replace(strikes=verdict.strikes))
            return False
        if verdict.action == DROP:
            await self.responder.settle(message, requeue=None)
            return False
        return await self._take_over(message, lease, answer)

    async def _repark(self, message: aiormq.abc.DeliveredMessage, lease: Lease) -> None:
        try:
            await self.park(message, lease)
        except exceptions.KiwiError as exc:
            _LOGGER.warning("lease %s not re-parked (%s); it goes back to the queue", lease, exc)
            await self.responder.settle(message, requeue=True)
            return
        await self.responder.settle(message, requeue=None)

    async def _take_over(
        self, message: aiormq.abc.DeliveredMessage, lease: Lease, answer: Optional[str]
    ) -> bool:
        claims = self.service.claims
        try:
            if not await claims.take(self.queue, lease.lease_id):
                await self._claimed_elsewhere(message, lease)
                return False
        except (exceptions.KiwiError, amqp_errors.ChannelClosed) as exc:
            _LOGGER.debug("lease %s not claimed (%s)", lease.lease_id, exc)
            await self.responder.settle(message, requeue=True)
            return False
        why = (
            "it released the task"
            if answer == RELEASED
            else f"{self.settings.strikes} failed checks"
        )
        _LOGGER.warning(
            "taking over task %s of %s from worker %s (%s)",
            task_key(message),
            self.queue,
            lease.owner,
            why,
        )
        return True

    async def _claimed_elsewhere(self, message: aiormq.abc.DeliveredMessage, lease: Lease) -> None:
        """Another worker (or this one, earlier) claimed the lease: drop the copy only if the
        claim's holder says the task is finished, else keep it parked (module of claims)."""
        answer = await self.service.claims.ask(self.queue, lease.lease_id)
        if answer in (FINISHED, UNKNOWN):
            await self.responder.settle(message, requeue=None)
        else:
            await self._repark(message, lease)

    async def give_up(self, message: aiormq.abc.DeliveredMessage) -> None:
        """A task taken but never run is given back (pull mode): if it was a take-over, let
        go of its claim first, so that whoever gets the copy next may claim it."""
        lease = read_lease(message.header.properties.headers)
        if lease is not None and self.service.claims.holds(self.queue, lease.lease_id):
            self.service.claims.release(self.queue, lease.lease_id, RELEASED, at_once=True)
