"""Task queues of the shared core (:mod:`kiwipy.core`), in push mode (subscribers) and pull
mode, for every broker.

Rules (the RabbitMQ transport follows the same ones):

* A task is acked only once its outcome is final and its reply was sent; until then it is
  unsettled and goes back to its queue if the communicator closes.
* Push mode tries the queue's subscribers in the order they were added. ``TaskRejected``
  passes the task to the next one; if all reject it, the broker offers it to *another*
  consumer (or keeps it until the subscribers change), never straight back to this one.
* Pull mode hands out :class:`BrokerIncomingTask` objects; a task that is still pending when
  the caller lets go of it (end of ``next_task``, end of iteration, its outcome future
  garbage-collected unresolved) is requeued.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Optional, Protocol

import shortuuid

from .. import _deadlines, _tracing, exceptions
from .._incoming import IncomingTask, run_subscribers
from .._outcome import EXCEPTION, Outcome
from .._replies import exception_response, outcome_response
from .._task_state import (
    TASK_FINISHED,
    TASK_PENDING,
    TASK_PROCESSING,
    TASK_REQUEUED,
)
from ..communications import AsyncTaskQueue, TaskSubscriber
from ._broker import Broker, Connection, Consumer, Delivery
from ._codec import Codec
from ._jobs import Jobs
from ._sending import Sender

__all__ = (
    "TASK_FINISHED",
    "TASK_PENDING",
    "TASK_PROCESSING",
    "TASK_REQUEUED",
    "BrokerIncomingTask",
    "BrokerTaskQueue",
    "TaskHost",
)


class TaskHost(Protocol):
    """What the task queues need of the communicator that owns them (implemented by
    :class:`~kiwipy.core.AsyncBrokerCommunicator`, which task subscribers are called with).
    A protocol, so that this module does not import the communicator's, which imports this
    one."""

    _closed: bool
    _held: set[BrokerIncomingTask]
    _codec: Codec  # decodes and traces the tasks
    _sender: Sender  # sends the replies
    _jobs: Jobs  # runs the subscribers

    @property
    def broker(self) -> Broker: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def _open(self) -> Connection: ...

    def _send_task(
        self, queue: str, task: Any, no_reply: bool, timeout: Optional[float] = None
    ) -> Optional[asyncio.Future[Any]]: ...

    def _send_task_now(
        self, queue: str, task: Any, no_reply: bool, timeout: Optional[float] = None
    ) -> Optional[concurrent.futures.Future[Any]]: ...


def _conclude(host: TaskHost, delivery: Delivery, no_reply: bool, result: Outcome) -> None:
    """Reply with a task's final outcome, then ack it (the order RabbitMQ tasks use). A task
    cut short at its deadline gets no reply, as an RPC does: its sender's future fails with
    ``DeadlineExceeded`` at that moment on its own (:func:`kiwipy._deadlines.cut_short`)."""
    if host._closed:  # the task went back to its queue when the connection closed
        return
    quiet = no_reply or _deadlines.cut_short(result)
    if quiet or host._sender.reply(delivery.message, outcome_response(result)):
        host.broker.ack(delivery)
    else:
        host.broker.dead_letter(delivery, "its reply cannot be encoded")


class BrokerTaskQueue(AsyncTaskQueue):
    """A named task queue of an :class:`~kiwipy.core.AsyncBrokerCommunicator`.

    :param communicator: the owning communicator.
    :param name: the queue's name on the broker.
    :param prefetch_count: how many of its tasks may be in progress here at once (0: any).
    """

    def __init__(self, communicator: TaskHost, name: str, prefetch_count: int = 0) -> None:
        self._comm = communicator
        self._name = name
        self._prefetch_count = prefetch_count
        self._subscribers: dict[Any, TaskSubscriber] = {}
        self._consumer: Optional[Consumer] = None

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._name

    async def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[asyncio.Future[Any]]:
        """Queue *task* here; see :meth:`~kiwipy.core.AsyncBrokerCommunicator.task_send`."""
        return self._comm._send_task(self._name, task, no_reply, timeout)

    def task_send_now(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[concurrent.futures.Future[Any]]:
        """:meth:`task_send` from any thread, the thread facade's (see
        :meth:`~kiwipy.core.AsyncBrokerCommunicator.task_send_now`)."""
        return self._comm._send_task_now(self._name, task, no_reply, timeout)

    async def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        """:raises DuplicateSubscriberIdentifier: if *identifier* is taken on this queue."""
        connection = self._comm._open()
        identifier = shortuuid.uuid() if identifier is None else identifier
        if identifier in self._subscribers:
            raise exceptions.DuplicateSubscriberIdentifier(f"Task identifier '{identifier}'")
        self._subscribers[identifier] = subscriber
        broker = self._comm.broker
        if self._consumer is None:
            self._consumer = broker.consume(
                connection, self._name, self._prefetch_count, self._on_delivery
            )
        else:  # the new subscriber may accept what the others rejected
            broker.refresh(self._consumer)
        return identifier

    async def remove_task_subscriber(self, identifier: Any) -> None:
        self._comm._open()
        try:
            del self._subscribers[identifier]
        except KeyError:
            raise ValueError(f"Unknown task subscriber '{identifier}'") from None
        if not self._subscribers and self._consumer is not None:
            self._comm.broker.cancel(self._consumer)
            self._consumer = None

    @contextlib.asynccontextmanager
    async def next_task(
        self, no_ack: bool = False, fail: bool = True, timeout: Optional[float] = None
    ) -> AsyncIterator[Optional[BrokerIncomingTask]]:
        """Async context manager yielding the next task, waiting up to *timeout* seconds for
        one (``None``: not at all, as kiwipy 0.9). A task still pending at exit is requeued. With *no_ack* the task leaves the
        queue at once and is lost if not processed.

        :raises QueueEmpty: if no task came and *fail* is true (else it yields ``None``).
        """
        await asyncio.sleep(0)  # let requeues already posted to this loop happen first
        task = await self._take(no_ack, timeout or 0.0)
        if task is None:
            if fail:
                raise exceptions.QueueEmpty(f"no task in queue '{self._name}'")
            yield None
            return
        try:
            yield task
        finally:
            if task.state == TASK_PENDING:
                task.give_back_now()

    async def __aiter__(self) -> AsyncGenerator[BrokerIncomingTask, None]:
        """Yield the tasks waiting in the queue until it is empty; those still pending when
        the iteration ends are requeued (so none is seen twice in one iteration)."""
        held: list[BrokerIncomingTask] = []
        await asyncio.sleep(0)
        try:
            while True:
                delivery = self._comm.broker.get(self._comm._open(), self._name)
                if delivery is None:
                    return
                task = self._incoming(delivery, no_ack=False)
                if task is not None:
                    held.append(task)
                    yield task
        finally:
            for task in held:
                if task.state == TASK_PENDING:
                    task.give_back_now()

    async def _take(self, no_ack: bool, timeout: float) -> Optional[BrokerIncomingTask]:
        loop, broker, connection = self._comm.loop, self._comm.broker, self._comm._open()
        deadline = loop.time() + timeout
        while True:
            wake = asyncio.Event()
            notify = wake.set
            delivery = broker.get(connection, self._name, notify)  # raises once closed
            if delivery is None:
                try:
                    await asyncio.wait_for(wake.wait(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    return None
                finally:
                    broker.forget_waiter(connection, notify)
                continue
            task = self._incoming(delivery, no_ack)
            if task is not None:
                return task

    def _incoming(self, delivery: Delivery, no_ack: bool) -> Optional[BrokerIncomingTask]:
        """:returns: the pull-mode task for *delivery*, or ``None`` if it could not be
        decoded (then it is answered with the error and dead-lettered) or is past its
        deadline (then it is dead-lettered)."""
        if self._dead_on_arrival(delivery):
            return None
        try:
            body, no_reply = self._comm._codec.decode_task(delivery.message.payload)
        except exceptions.DecodeError as exc:
            self._reject_undecodable(delivery, exc)
            return None
        if no_ack:
            self._comm.broker.ack(delivery)
        return BrokerIncomingTask(self._comm, delivery, body, no_reply)

    def _dead_on_arrival(self, delivery: Delivery) -> bool:
        """:returns: whether *delivery* must not start: past its deadline (then it is
        dead-lettered, its sender's future failed with ``DeadlineExceeded`` already), or
        cancelled by its sender (then it is acknowledged: the sender wants it gone)."""
        if delivery.message.cancelled:
            self._comm.broker.ack(delivery)
            return True
        if not _deadlines.expired(delivery.message.deadline):
            return False
        self._comm.broker.dead_letter(delivery, _deadlines.EXPIRED)
        return True

    def _reject_undecodable(self, delivery: Delivery, exc: exceptions.DecodeError) -> None:
        self._comm._sender.reply(delivery.message, exception_response(exc))
        self._comm.broker.dead_letter(delivery, str(exc))

    def _on_delivery(self, delivery: Delivery) -> None:
        if delivery.settled:  # given back while the call was on its way to this loop
            return
        if self._comm._closed or delivery.consumer is not self._consumer:
            self._comm.broker.requeue(delivery)  # no subscriber here any more
            return
        serving = self._comm._codec.handling_task(
            self._serve(delivery), self._name, delivery.message
        )
        self._comm._jobs.spawn(serving)  # traced: issue 17

    async def _serve(self, delivery: Delivery) -> None:
        comm = self._comm
        if self._dead_on_arrival(delivery):
            return
        try:
            task, no_reply = comm._codec.decode_task(delivery.message.payload)
        except exceptions.DecodeError as exc:
            self._reject_undecodable(delivery, exc)
            return
        pending = (
            None if no_reply else functools.partial(comm._sender.reply_pending, delivery.message)
        )
        subscribers = self._subscribers.values()
        outcome = await run_subscribers(
            subscribers, (comm, task), pending, delivery.message.deadline
        )
        if outcome is None:
            _tracing.rejected()  # issue 17
            comm.broker.requeue(delivery, reject=True)
            return
        if outcome.kind == EXCEPTION:
            _tracing.failed(outcome.value)  # issue 17
        _conclude(comm, delivery, no_reply, outcome)


class BrokerIncomingTask(IncomingTask):
    """A task taken in pull mode from a broker (the life cycle: :mod:`kiwipy._incoming`)."""

    def __init__(
        self, communicator: TaskHost, delivery: Delivery, body: Any, no_reply: bool
    ) -> None:
        super().__init__(communicator.loop, body, no_reply)
        self._comm = communicator
        self._delivery = delivery

    def _check_open(self) -> None:
        self._comm._open()

    def _hold(self, held: bool) -> None:
        if held:
            self._comm._held.add(self)
        else:
            self._comm._held.discard(self)

    async def _finish(self, outcome: Outcome) -> None:
        _conclude(self._comm, self._delivery, self._no_reply, outcome)

    async def _give_back(self) -> None:
        self._comm.broker.requeue(self._delivery)

    def give_back_now(self) -> None:
        """Give the task back at once, unless it is finished (the queue's iteration or
        ``next_task`` ended with it still pending)."""
        if self._state in (TASK_PENDING, TASK_PROCESSING):
            self._state = TASK_REQUEUED
            self._outcome_ref = None
            self._hold(False)
            self._comm.broker.requeue(self._delivery)
