"""Claims: how exactly one worker takes a lease over, and how the others learn what became of it.

Invariants:

* A claim is an exclusive queue ``<queue>.claim.<lease id>``. RabbitMQ lets one connection
  hold it, so of two checkers racing for one lease exactly one wins the declare; a claim of a
  worker that dies vanishes with its connection.
* The winner answers checks of the lease *on its claim queue* (the owner's answers,
  :mod:`kiwipy.rmq.leases._lease_service`): ``running`` while it runs the task, ``finished`` once the
  task ended with an outcome (or continues under a lease of the winner's own), ``released``
  when it gave the task back without one. A loser asks the claim before doing anything with
  its copy, and drops it only on ``finished``: a copy is never dropped while the task could
  still need it (the winner might give the task back; plumpy rejects tasks on purpose).
* A claim is deleted at once when its task is given back (so the copy can be claimed
  again), and a few check periods after it finished (every stale duplicate comes back within
  one interval and is answered ``finished`` meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, NamedTuple, Optional, Protocol

import aiormq.abc
from aiormq import exceptions as amqp_errors

from ... import exceptions
from ..connection._session import PROBE, Session
from ._leases import LEASES, RUNNING, LeaseSettings, claim_queue

__all__ = ("Claims",)

_LOGGER = logging.getLogger("kiwipy.rmq.tasks")


class _Claim(NamedTuple):
    lease_id: str
    consumer_tag: Optional[str] = None
    deletion: Optional[asyncio.TimerHandle] = None


class LeaseAnswers(Protocol):
    """What claims need of the worker's :class:`~kiwipy.rmq.leases._lease_service.LeaseService`
    (a protocol, so that this module does not import the service's, which imports it)."""

    session: Session
    settings: LeaseSettings

    async def start(self) -> None: ...

    def set_answer(self, lease_id: str, answer: str) -> None: ...

    def answer(self, lease_id: str) -> str: ...

    async def ask(self, queue: str, lease_id: str) -> Optional[str]: ...

    async def on_check(self, message: aiormq.abc.DeliveredMessage) -> None: ...

    def spawn(self, coro: Any) -> None: ...


class Claims:
    """The claims one worker holds.

    :param service: the worker's :class:`~kiwipy.rmq.leases._lease_service.LeaseService`.
    """

    def __init__(self, service: LeaseAnswers) -> None:
        self._service = service
        self._held: dict[str, _Claim] = {}

    async def take(self, queue: str, lease_id: str) -> bool:
        """Claim *lease_id* of *queue*. :returns: whether this worker won it now (``False``
        when another worker, or this one earlier, holds it: ask it with :meth:`ask`)."""
        name = claim_queue(queue, lease_id)
        if name in self._held:
            return False
        await self._service.start()
        try:
            await self._declare(name)
        except amqp_errors.ChannelLockedResource:
            return False
        self._service.set_answer(lease_id, RUNNING)
        self._held[name] = _Claim(lease_id)
        await self._consume(name)
        return True

    async def ask(self, queue: str, lease_id: str) -> Optional[str]:
        """:returns: what the holder of the claim on *lease_id* says about it (``None``:
        nobody holds it any more, or it is silent)."""
        name = claim_queue(queue, lease_id)
        if name in self._held:
            return self._service.answer(lease_id)
        return await self._service.ask(name, lease_id)

    def holds(self, queue: str, lease_id: str) -> bool:
        return claim_queue(queue, lease_id) in self._held

    def release(self, queue: str, lease_id: str, answer: str, at_once: bool) -> None:
        """The task claimed as *lease_id* ended here: answer *answer* about it from now on,
        and delete the claim *at_once* (given back) or after a few check periods."""
        name = claim_queue(queue, lease_id)
        claim = self._held.get(name)
        if claim is None or claim.deletion is not None:
            return
        self._service.set_answer(lease_id, answer)
        if at_once:
            self._service.spawn(self.drop(name))
            return
        settings = self._service.settings
        delay = (settings.strikes + 2) * (settings.interval + settings.check_timeout)
        handle = self._service.session.loop.call_later(delay, self._drop_later, name)
        self._held[name] = claim._replace(deletion=handle)

    def _drop_later(self, name: str) -> None:
        self._service.spawn(self.drop(name))

    async def drop(self, name: str) -> None:
        """Stop answering on the claim queue *name* and delete it."""
        claim = self._held.pop(name, None)
        if claim is None:
            return
        if claim.deletion is not None:
            claim.deletion.cancel()
        session = self._service.session
        with contextlib.suppress(exceptions.KiwiError, amqp_errors.ChannelClosed):
            if claim.consumer_tag is not None:
                await session.cancel(LEASES, claim.consumer_tag)
            await session.call("deleting a claim", "queue_delete", queue=name)

    async def restore(self) -> None:
        """After a reconnection: claim again what this worker held (exclusive queues go with
        their connection)."""
        for name in list(self._held):
            try:
                await self._declare(name)
            except amqp_errors.ChannelLockedResource:
                _LOGGER.warning("claim %s was taken by another worker while reconnecting", name)
                self._held.pop(name, None)
                continue
            await self._consume(name)

    async def _declare(self, name: str) -> None:
        # On the probe channel: losing the race closes the channel (RESOURCE_LOCKED).
        await self._service.session.call(
            "claiming a lease", "queue_declare", purpose=PROBE, queue=name, exclusive=True
        )

    async def _consume(self, name: str) -> None:
        session = self._service.session
        if name in self._held and not session.is_consuming(LEASES, self._held[name].consumer_tag):
            tag = await session.consume(LEASES, name, self._service.on_check, no_ack=True)
            self._held[name] = self._held[name]._replace(consumer_tag=tag)
