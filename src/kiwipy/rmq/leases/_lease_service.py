"""One worker's side of leases: its identity as an owner, its answers, its checks, its claims.

There is one :class:`LeaseService` per session (so per communicator). Invariants:

* The owner id is a uuid per session. The worker answers lease checks on the exclusive queue
  :func:`~kiwipy.rmq.leases._leases.worker_queue` ``(owner)``, reached through the default exchange.
  An exclusive queue lives exactly as long as the connection that declared it, so a check
  published with ``mandatory`` comes back unroutable as soon as the owner's connection is
  gone: the broker, not a heartbeat of ours, tells checkers that an owner died.
* Nothing is declared until a lease is made or checked (:meth:`LeaseService.start`): short
  tasks cost nothing here. After a reconnection the queues are declared and consumed again
  (a check arriving in the gap is one strike; a take-over needs ``lease_strikes`` of them).
* Checks and answers are tiny messages of their own (the body is the lease id, the answer is
  one of :data:`~kiwipy.rmq.leases._leases.ANSWERS`), independent of the encoder and the message
  exchange, so workers on one task queue need no other shared configuration.
* Claims (:mod:`kiwipy.rmq.leases._lease_claims`) make a take-over single; the worker that holds
  one answers checks of the lease on it.
* :attr:`LeaseService.running` is the table of tasks running in this worker, keyed by task
  queue and task key: a second delivery of a task in it is never run (see
  :mod:`kiwipy.rmq.leases._lease_tasks`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
import weakref
from typing import Any, ClassVar, Optional, Protocol

import aiormq.abc

from ... import exceptions
from ..connection import _amqp
from ..connection._session import Session
from ._lease_claims import Claims
from ._leases import LEASES, UNKNOWN, Lease, LeaseSettings, worker_queue

__all__ = ("LEASES", "LeaseService", "Running")

_LOGGER = logging.getLogger("kiwipy.rmq.tasks")

_MAX_REMEMBERED = 10000


class Running(Protocol):
    """A task running in this worker, as its entry in :attr:`LeaseService.running` is used
    (implemented by :class:`kiwipy.rmq.leases._lease_tasks.RunningTask`; a protocol, so that this
    module does not import that one, which imports it)."""

    @property
    def key(self) -> str: ...

    @property
    def lease_id(self) -> Optional[str]: ...

    async def convert(self, delivery: aiormq.abc.DeliveredMessage) -> None: ...


class LeaseService:
    """The lease side of one session; get it with :meth:`of`."""

    _services: ClassVar[weakref.WeakKeyDictionary[Session, LeaseService]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def of(cls, session: Session) -> LeaseService:
        """:returns: the service of *session*, made on first use."""
        service = cls._services.get(session)
        if service is None:
            service = cls._services[session] = cls(session)
        return service

    def __init__(self, session: Session) -> None:
        self.session = session
        self.settings = LeaseSettings.from_options(session.options)
        self.owner = uuid.uuid4().hex
        self.running: dict[tuple[str, str], Running] = {}
        #: Keys of tasks finished and answered here whose delivery could not be acknowledged
        #: (its channel was gone): a redelivery of one of them is dropped, not run again.
        self.finished_unacked: collections.OrderedDict[tuple[str, str], None] = (
            collections.OrderedDict()
        )
        self._answers: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self._reply_queue = ""
        self._check_tag: Optional[str] = None
        self._answer_tag: Optional[str] = None
        self._started: Optional[asyncio.Future[None]] = None
        self.claims = Claims(self)
        self._background: set[asyncio.Task[Any]] = set()

    # Start-up (lazy) and restoration

    async def start(self) -> None:
        """Declare and consume this worker's check queue and answer queue (once)."""
        started = self._started
        if started is None or (started.done() and (started.cancelled() or started.exception())):
            self._started = started = asyncio.ensure_future(self._start())
        await asyncio.shield(started)

    async def _start(self) -> None:
        await self._declare_and_consume()
        self.session.add_restorer(LEASES, self, self._restore)

    async def _declare_and_consume(self) -> None:
        """Idempotent (restorers may run when only one consumer was cancelled)."""
        queue = worker_queue(self.owner)
        await self.session.call(
            "declaring the lease check queue", "queue_declare", queue=queue, exclusive=True
        )
        if not self.session.is_consuming(LEASES, self._check_tag):
            self._check_tag = await self.session.consume(LEASES, queue, self.on_check, no_ack=True)
        if not self.session.is_consuming(LEASES, self._answer_tag):
            ok = await self.session.call(
                "declaring the lease answer queue", "queue_declare", queue="", exclusive=True
            )
            self._answer_tag = await self.session.consume(
                LEASES, ok.queue, self._on_answer, no_ack=True
            )
            self._reply_queue = str(ok.queue)

    async def _restore(self) -> None:
        await self._declare_and_consume()
        await self.claims.restore()

    # Answering checks (as an owner)

    def set_answer(self, lease_id: str, answer: str) -> None:
        """From now on, answer *answer* to checks of *lease_id*."""
        self._answers[lease_id] = answer
        self._answers.move_to_end(lease_id)
        while len(self._answers) > _MAX_REMEMBERED:
            self._answers.popitem(last=False)

    def answer(self, lease_id: str) -> str:
        """:returns: what this worker says about its lease *lease_id*."""
        return self._answers.get(lease_id, UNKNOWN)

    async def on_check(self, message: aiormq.abc.DeliveredMessage) -> None:
        """Answer a lease check (on the worker queue or on a claim queue)."""
        props = message.header.properties
        if not props.reply_to:
            return
        answer = self.answer(message.body.decode("utf-8", "replace"))
        reply = _amqp.properties(correlation_id=props.correlation_id)
        try:
            await self.session.publish(
                "", props.reply_to, answer.encode(), reply, False, retry=False
            )
        except exceptions.KiwiError as exc:
            _LOGGER.debug("answer to a lease check not sent: %s", exc)

    # Checking (as a checker)

    async def check(self, lease: Lease) -> Optional[str]:
        """Ask the owner of *lease* about it.

        :returns: the answer, or ``None`` if the owner is unreachable (its check queue is
            gone) or silent for ``lease_check_timeout`` seconds.
        :raises ConnectionLost: if *our* connection failed (that is no strike).
        """
        if lease.owner == self.owner:
            return self.answer(lease.lease_id)
        return await self.ask(worker_queue(lease.owner), lease.lease_id)

    async def ask(self, queue: str, lease_id: str) -> Optional[str]:
        """Ask whoever answers on *queue* (a worker or a claim queue) about *lease_id*; see
        :meth:`check`."""
        await self.start()
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[str] = self.session.loop.create_future()
        self._waiting[correlation_id] = future
        props = _amqp.properties(correlation_id=correlation_id, reply_to=self._reply_queue)
        try:
            await self.session.publish("", queue, lease_id.encode(), props, True, retry=False)
            return await asyncio.wait_for(future, self.settings.check_timeout)
        except (exceptions.UnroutableError, asyncio.TimeoutError):
            return None
        finally:
            self._waiting.pop(correlation_id, None)

    async def _on_answer(self, message: aiormq.abc.DeliveredMessage) -> None:
        future = self._waiting.get(message.header.properties.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message.body.decode("utf-8", "replace"))

    # Bookkeeping

    def remember_finished(self, key: tuple[str, str]) -> None:
        """The task *key* finished and was answered, but its delivery stayed unacknowledged."""
        self.finished_unacked[key] = None
        while len(self.finished_unacked) > _MAX_REMEMBERED:
            self.finished_unacked.popitem(last=False)

    def spawn(self, coro: Any) -> None:
        """Run *coro* in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
