"""A task taken from a queue, and how it is finished, given back or parked.

Rules (the at-least-once contract):

1. A task is acknowledged only once its outcome is final **and** its reply (when one is
   wanted) has been confirmed by the broker. A worker dying anywhere before that leaves the
   task unacknowledged, so the broker gives it to another worker. If the reply cannot be
   confirmed because the connection failed, the task is requeued, not acknowledged.
2. A cancelled outcome is final: the sender gets kiwipy 0.9's ``cancelled`` reply and the task
   is acknowledged (kiwipy 0.9 left it unacknowledged until the channel closed: bug B5), as on
   every transport (:mod:`kiwipy._outcome`).
3. A task that can never be processed (too large, undecodable, the wrong shape) is *parked*:
   copied, with a confirm, to the durable queue ``<queue>.dead`` with the header
   ``x-kiwipy-reason`` (``too-large``, ``undecodable``, ``malformed``), the error text, the
   time (``x-kiwipy-parked-at``) and its original exchange, routing key and queue; the
   sender (if it gave ``reply_to``) gets an exception reply; then the original is
   acknowledged. Never redelivered in a loop (``kiwipy dead`` lists and requeues it).
4. A task every local subscriber rejected goes back to the queue (``basic.nack`` with requeue)
   so another consumer can take it. The first time, at once; if it comes back to this worker,
   it is held (unacknowledged) for ``reject_backoff`` seconds, doubling on each return up to
   ten times that, before it is requeued again: a task nobody here wants costs this worker at
   most one delivery per backoff period instead of a tight loop (bug B6). The same backoff
   applies when a task cannot be parked.
5. A task that runs long becomes a *lease* (:mod:`kiwipy.rmq.leases._lease_tasks`): its delivery is
   acknowledged once a copy is parked in ``<queue>.leases``, so rules 1 and 4 then apply to the
   lease instead: its outcome is replied as usual and the lease answers ``finished`` (or
   ``released`` when the reply could not be sent, so another worker runs it again).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any, Optional

import aiormq.abc
from pamqp import commands as spec

from ... import _deadlines, _tracing, exceptions
from ..._incoming import IncomingTask
from ..._outcome import encode_reply
from ..._task_state import TASK_FINISHED, TASK_PENDING, TASK_PROCESSING, TASK_REQUEUED
from .. import protocol
from ..connection import _amqp
from ..connection._session import Session
from ..leases._lease_tasks import RunningTask, TaskLeases
from ..leases._leases import read_lease
from . import _acks, _outcome
from ._cancel import TaskCancels
from ._replies import send_reply

__all__ = (
    "TASK_FINISHED",
    "TASK_PENDING",
    "TASK_PROCESSING",
    "TASK_REQUEUED",
    "RejectBackoff",
    "RmqIncomingTask",
    "TaskInfo",
    "TaskResponder",
)

_LOGGER = logging.getLogger("kiwipy.rmq.tasks")

#: kiwipy 0.9's name for the decoded ``(task, no_reply)`` pair.
TaskInfo = protocol.TaskBody

REASON_HEADER = "x-kiwipy-reason"
#: When a task was parked (seconds since the epoch), for ``kiwipy dead list``.
PARKED_AT_HEADER = "x-kiwipy-parked-at"


class RejectBackoff:
    """Remembers tasks given back recently, to hold them when they keep coming back.

    :param base: seconds of the first hold; doubles per return, up to ten times *base*.
    """

    _MAX_ENTRIES = 10000

    def __init__(self, base: float) -> None:
        self._base = base
        self._seen: collections.OrderedDict[Any, tuple[int, float]] = collections.OrderedDict()

    def delay(self, key: Any, now: float) -> float:
        """:returns: seconds to hold the task *key* before requeueing it (0: at once)."""
        count, last = self._seen.pop(key, (0, 0.0))
        if now - last > self._base * 40:
            count = 0  # it stayed away a long while: start over
        self._seen[key] = (count + 1, now)
        while len(self._seen) > self._MAX_ENTRIES:
            self._seen.popitem(last=False)
        return 0.0 if count == 0 else min(self._base * 2 ** (count - 1), self._base * 10)


def _task_key(message: aiormq.abc.DeliveredMessage) -> Any:
    props = message.header.properties
    return props.message_id or props.correlation_id or hash(message.body)


class TaskResponder:
    """Replies, acknowledgements and parking for the tasks of one queue.

    :param session: the session to publish with.
    :param exchange: the task exchange (kiwipy 0.9 replies through it).
    :param queue: the task queue's name.
    """

    def __init__(self, session: Session, exchange: str, queue: str) -> None:
        self.session = session
        self.exchange = exchange
        self.queue = queue
        self.backoff = RejectBackoff(session.options["reject_backoff"])
        self._content_type = session.encoder.content_type
        self.leases = TaskLeases(self)
        #: the tasks their senders cancelled (set by a worker that listens for them)
        self.cancels: Optional[TaskCancels] = None

    async def reply(self, message: aiormq.abc.DeliveredMessage, response: dict[str, Any]) -> bool:
        """Send *response* (with host info) to the task's sender and wait for the confirm.

        :returns: ``False`` if the task must not be acknowledged (the reply was not taken
            because of the connection); ``True`` when confirmed or when its reply queue is
            gone (nobody is waiting any more).
        """
        props = message.header.properties
        if not props.reply_to:
            return True
        protocol.add_host_info(response)
        encoder = self.session.encoder
        body, _sent = encode_reply(encoder.encode, response, _exception_with_host, encoder.name)
        reply = _amqp.properties(
            correlation_id=props.correlation_id, content_type=self._content_type
        )
        _LOGGER.debug(
            "Replying to task %s via %r: %r", props.correlation_id, props.reply_to, response
        )
        try:
            await send_reply(self.session, self.exchange, props.reply_to, body, reply)
        except exceptions.UnroutableError:
            _LOGGER.warning("the sender of task %s is gone; reply dropped", props.correlation_id)
        except exceptions.KiwiError as exc:
            _LOGGER.warning("reply to task %s not sent: %s", props.correlation_id, exc)
            return False
        return True

    async def settle(self, message: aiormq.abc.DeliveredMessage, requeue: Optional[bool]) -> None:
        """Acknowledge the delivery (``requeue=None``) or nack it. Nothing to do when its
        channel is gone: the broker has given the task back already."""
        if message.channel.is_closed or message.delivery_tag is None:
            return
        with contextlib.suppress(*_amqp.SEND_ERRORS):
            if requeue is None:  # written with the other acks of this loop iteration (issue 6)
                await _acks.ack(message.channel, message.delivery_tag)
            else:
                await message.channel.basic_nack(message.delivery_tag, requeue=requeue)

    async def give_back(self, message: aiormq.abc.DeliveredMessage) -> None:
        """Requeue a task this worker cannot take, holding it first if it keeps coming back
        (module rule 4)."""
        delay = self.backoff.delay(_task_key(message), self.session.loop.time())
        if delay:
            _LOGGER.debug(
                "holding task %s for %.2f s before requeueing it", _task_key(message), delay
            )
            await asyncio.sleep(delay)
        await self.settle(message, requeue=True)

    async def park(
        self, message: aiormq.abc.DeliveredMessage, reason: str, error: BaseException
    ) -> None:
        """Move a task that can never be processed to ``<queue>.dead`` (module rule 3)."""
        _LOGGER.error(
            "parking a task of %s in %s.dead (%s): %s", self.queue, self.queue, reason, error
        )
        try:
            await self.session.publish(
                "",
                f"{self.queue}.dead",
                message.body,
                self._parked(message, reason, error),
                mandatory=True,
                check_size=False,  # a copy of what we were sent, whatever its size
            )
        except exceptions.KiwiError as exc:
            _LOGGER.error("could not park the task (%s); it goes back to the queue", exc)
            await self.give_back(message)
            return
        _tracing.dead_lettered(_tracing.RABBITMQ, self.queue, reason)  # issue 17
        await self.reply(message, protocol.exception_response(error))
        await self.settle(message, requeue=None)

    def _parked(
        self, message: aiormq.abc.DeliveredMessage, reason: str, error: BaseException
    ) -> spec.Basic.Properties:
        props = message.header.properties
        headers = dict(props.headers or {})
        headers.update(
            {
                REASON_HEADER: reason,
                "x-kiwipy-error": str(error)[:1000],
                "x-kiwipy-original-exchange": message.exchange or "",
                "x-kiwipy-original-routing-key": message.routing_key or "",
                "x-kiwipy-original-queue": self.queue,
                PARKED_AT_HEADER: int(time.time()),
            }
        )
        return spec.Basic.Properties(
            content_type=props.content_type,
            content_encoding=props.content_encoding,
            headers=headers,
            delivery_mode=2,
            correlation_id=props.correlation_id,
            reply_to=props.reply_to,
            message_id=props.message_id,
            timestamp=props.timestamp,
        )

    async def decode(self, message: aiormq.abc.DeliveredMessage) -> Optional[protocol.TaskBody]:
        """:returns: the task in *message*, or ``None`` after parking it if it has none or
        is past its deadline (:mod:`kiwipy._deadlines`: it waited in a prefetch buffer, or
        in a queue that does not dead-letter on expiry, after the broker let it go)."""
        from ._replies import decode_body

        if self._expired(message):
            error = exceptions.DeadlineExceeded("the task's deadline passed before it started")
            await self.park(message, _deadlines.EXPIRED, error)
            return None
        if self._cancelled(message):
            _LOGGER.info("not starting task %s: its sender cancelled it", _task_key(message))
            await self.settle(message, requeue=None)
            return None
        try:
            return protocol.decode_task(await decode_body(self.session, message.body))
        except exceptions.MessageTooLarge as exc:
            await self.park(message, "too-large", exc)
        except protocol.MalformedMessage as exc:
            await self.park(message, "malformed", exc)
        except exceptions.DecodeError as exc:
            await self.park(message, "undecodable", exc)
        return None

    def _cancelled(self, message: aiormq.abc.DeliveredMessage) -> bool:
        props = message.header.properties
        # a lease copy stands for a task that started already
        return (
            self.cancels is not None
            and read_lease(props.headers) is None
            and self.cancels.cancelled(props.correlation_id)
        )

    @staticmethod
    def _expired(message: aiormq.abc.DeliveredMessage) -> bool:
        headers = message.header.properties.headers
        # a lease copy stands for a task that started in time (its deadline no longer counts)
        return read_lease(headers) is None and _deadlines.expired(_deadlines.from_headers(headers))


def _exception_with_host(exc: BaseException) -> dict[str, Any]:
    response = protocol.exception_response(exc)
    protocol.add_host_info(response)
    return response


class RmqIncomingTask(IncomingTask):
    """A task received from a queue (the pull-mode life cycle: :mod:`kiwipy._incoming`); the
    push-mode consumer drives it with :meth:`begin`, :meth:`finish`, :meth:`give_back` and
    :meth:`abandon`.

    :param responder: the queue's :class:`TaskResponder` (kiwipy 0.9 took the subscriber).
    :param message: the aiormq delivery.
    :param task: the decoded task (decoded from *message* if ``None``).
    :param no_ack: the delivery was taken without acknowledgement.
    """

    def __init__(
        self,
        responder: TaskResponder,
        message: aiormq.abc.DeliveredMessage,
        task: Optional[protocol.TaskBody] = None,
        no_ack: bool = False,
    ) -> None:
        if task is None:
            task = protocol.decode_task(responder.session.encoder.decode(message.body))
        super().__init__(responder.session.loop, task.task, task.no_reply)
        self._responder = responder
        self._message = message
        self._no_ack = no_ack
        self._running: Optional[RunningTask] = None

    def _check_open(self) -> None:
        if self._responder.session.closed:
            raise exceptions.CommunicatorClosed

    def _begin(self) -> None:
        self.begin()

    def begin(self) -> Optional[RunningTask]:
        """The task starts running: from now on it is in the table of running tasks, and it
        becomes a lease if it runs long (:mod:`kiwipy.rmq.leases._lease_tasks`). :returns:
        its entry, ``None`` without leases or acknowledgement."""
        if self._running is None and not self._no_ack:
            self._running = self._responder.leases.begin(self._message)
        return self._running

    def abandon(self) -> None:
        """The run was cancelled before its end (the subscriber is closing): forget it, and
        release its lease if it has one. Nothing to do after :meth:`finish`."""
        running, self._running = self._running, None
        if running is not None:
            running.abandon()

    async def _end_run(self, answered: bool) -> bool:
        """:returns: whether the run was leased (its delivery is acknowledged already)."""
        running, self._running = self._running, None
        return running is not None and await running.end(answered)

    async def _give_back(self) -> None:
        if await self._end_run(answered=False):
            return  # released: the next check of its lease runs it again
        if not self._no_ack:
            await self._responder.leases.give_up(self._message)
            await self._responder.settle(self._message, requeue=True)

    async def give_back(self) -> None:
        """Every local subscriber rejected the task: requeue it, with the backoff of module
        rule 4 (or release its lease)."""
        self._state = TASK_REQUEUED
        if not await self._end_run(answered=False):
            await self._responder.give_back(self._message)

    async def finish(self, outcome: _outcome.Outcome) -> None:
        """Reply with *outcome* (unless ``no_reply``), then acknowledge (module rule 1)."""
        if self._state in (TASK_FINISHED, TASK_REQUEUED):
            return
        self._state = TASK_FINISHED
        await self._finish(outcome)

    async def _finish(self, outcome: _outcome.Outcome) -> None:
        if outcome.kind == _outcome.EXCEPTION:
            error = outcome.value  # with its traceback: the repr alone rarely says where
            _LOGGER.warning(
                "task raised %r", error, exc_info=(type(error), error, error.__traceback__)
            )
        # cut short at its deadline: no reply, the sender's future failed on its own then
        quiet = self.no_reply or _deadlines.cut_short(outcome)
        answered = quiet or await self._responder.reply(
            self._message, _outcome.to_response(outcome)
        )
        if await self._end_run(answered):
            return  # leased: the lease now answers 'finished' (or 'released')
        if not answered:
            self._state = TASK_REQUEUED
            await self._responder.settle(self._message, requeue=True)
        elif not self._no_ack:
            await self._responder.settle(self._message, requeue=None)
