"""The consumer of one task subscriber, and what the broker may do to it.

Invariants:

* Prefetch is per consumer (``basic.qos`` without ``global``: RabbitMQ 4 removed global QoS).
  With leases on and a prefetch count set, it stays a bound on the tasks *in hand*, held or
  leased (:class:`~kiwipy.rmq.leases._leases.Slots`): when a task of the consumer becomes a lease,
  the consumer is started again at once with one slot less (a per-consumer prefetch applies
  to consumers started after it is set); when a task outside its count ends, it is started
  again a moment later to use the freed slot. With every slot leased it does not consume.
  Without a prefetch count, or without leases, none of this happens: today's path.
* The broker may close the channel for a delivery held longer than its ``consumer_timeout``
  (406 PRECONDITION_FAILED, "delivery acknowledgement ... timed out"). The session then
  reopens it and the subscriber consumes again; the tasks that were running carry on, and the
  broker's redeliveries of them are folded into their runs (:mod:`kiwipy.rmq.leases._lease_tasks`).
  This is logged once per consumer, with the broker's timeout, because it means
  ``task_lease_after`` is too close to it (or leases are off).
* The broker may cancel the consumer (``basic.cancel``: the queue was deleted, or RabbitMQ
  4.3's ``consumer_timeout_response = notify_consumer``). The session notices and runs the
  subscriber's restorer, which declares the queue and calls :meth:`TaskConsumer.start`:
  idempotent, it consumes only when the consumer is gone. Deliveries in hand stay valid on
  their channel (or come back as redeliveries, folded as above).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Callable, Optional

import aiormq.abc
from pamqp import commands as spec

from ..connection import _amqp
from ..connection._session import Session
from ..leases._leases import LeaseSettings, Slots, delivery_timeout_ms

__all__ = ("TaskConsumer",)

_LOGGER = logging.getLogger("kiwipy.rmq.tasks")

#: Seconds before a consumer is started again to use slots freed outside its count.
_REFILL_DELAY = 1.0


class TaskConsumer:
    """Consumes one task queue for one subscriber.

    :param session: the session.
    :param purpose: the subscriber's channel purpose.
    :param queue: the task queue.
    :param callback: called with each delivery.
    :param prefetch: ``(prefetch_size, prefetch_count)``.
    """

    def __init__(
        self,
        session: Session,
        purpose: str,
        queue: str,
        callback: Callable[[aiormq.abc.DeliveredMessage], Awaitable[None]],
        prefetch: tuple[int, int],
    ) -> None:
        self._session = session
        self._purpose = purpose
        self._queue = queue
        self._callback = callback
        self._prefetch_size = prefetch[0]
        leases = LeaseSettings.from_options(session.options).enabled
        self.slots = Slots(prefetch[1] if leases else 0)
        self.tag: Optional[str] = None
        self.wanted = False
        self._lock = asyncio.Lock()
        self._channel: Optional[aiormq.abc.AbstractChannel] = None
        self._qos: Optional[tuple[aiormq.abc.AbstractChannel, int]] = None
        self._refill: Optional[asyncio.TimerHandle] = None
        self._warned = False
        self._background: set[asyncio.Task[Any]] = set()

    # Starting and stopping

    async def start(self) -> None:
        """Consume, unless consuming already (so restorers may call it at any time)."""
        async with self._lock:
            self.wanted = True
            if self.tag is not None and self._session.is_consuming(self._purpose, self.tag):
                return
            await self._start()

    async def restart(self) -> None:
        """Cancel the consumer and consume again, with the prefetch the slots allow."""
        async with self._lock:
            if not self.wanted:
                return
            await self._cancel()
            await self._start()

    async def stop(self) -> None:
        """Stop consuming; deliveries in hand stay unacknowledged until settled."""
        async with self._lock:
            self.wanted = False
            if self._refill is not None:
                self._refill.cancel()
                self._refill = None
            await self._cancel()

    async def _cancel(self) -> None:
        if self.tag is not None:
            tag, self.tag = self.tag, None
            await self._session.cancel(self._purpose, tag)

    async def _start(self) -> None:
        prefetch = 0
        if self.slots.active:
            prefetch = self.slots.restarted()
            self._session.set_prefetch(self._purpose, self._prefetch_size, prefetch or 1)
            if prefetch == 0:
                _LOGGER.info(
                    "every task slot of %s is taken by a lease; not consuming", self._queue
                )
                return
        channel = await self._session.channel(self._purpose)
        if prefetch:
            await self._apply_qos(channel, prefetch)
        self.tag = await self._session.consume(self._purpose, self._queue, self._callback)
        if channel is not self._channel:
            self._channel = channel
            channel.closing.add_done_callback(self._on_closing)

    async def _apply_qos(self, channel: aiormq.abc.AbstractChannel, prefetch: int) -> None:
        if self._qos is None and prefetch == self.slots.limit:
            self._qos = (channel, prefetch)  # the first start: the session set it on opening
            return
        if self._qos is None or self._qos[0] is not channel or self._qos[1] != prefetch:
            try:
                await channel.basic_qos(prefetch_size=self._prefetch_size, prefetch_count=prefetch)
            except _amqp.SEND_ERRORS as exc:
                raise _amqp.translate(exc, f"setting the prefetch of {self._queue!r}") from exc
            self._qos = (channel, prefetch)

    # What the broker does

    def _on_closing(self, closing: asyncio.Future[Any]) -> None:
        exc = None if closing.cancelled() else closing.exception()
        timeout = delivery_timeout_ms(str(exc)) if exc is not None else None
        if timeout is None or self._warned:
            return
        self._warned = True
        value = f"{timeout} ms" if timeout >= 0 else "its consumer_timeout"
        after = self._session.options["task_lease_after"]
        _LOGGER.warning(
            "the broker closed the channel of task queue %s because a delivery was held "
            "longer than its consumer_timeout (%s); task_lease_after (%s s) must stay well "
            "below it, minus one channel tick (60 s by default). Running tasks carry on; "
            "their redeliveries are converted into leases instead of running twice",
            self._queue,
            value,
            after,
        )

    # Pull mode

    async def get(self, no_ack: bool, deadline: float) -> Optional[aiormq.abc.DeliveredMessage]:
        """:returns: the next message (``basic.get``), polling until the loop time
        *deadline*, or ``None``."""
        loop, pause = self._session.loop, 0.01
        while True:
            channel = await self._session.channel(self._purpose)
            try:
                message = await channel.basic_get(self._queue, no_ack=no_ack)
            except _amqp.SEND_ERRORS as exc:
                raise _amqp.translate(exc, f"getting a task from {self._queue!r}") from exc
            if isinstance(message.delivery, spec.Basic.GetOk):
                return message
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.2)

    # Slots (only with leases and a prefetch count)

    def task_started(self, message: aiormq.abc.DeliveredMessage) -> int:
        """A delivery starts running here. :returns: its generation, for the calls below."""
        if not self.slots.active:
            return 0
        current = getattr(message.delivery, "consumer_tag", None) == self.tag
        generation = self.slots.received()
        if not current:
            self.slots.leased(generation)  # counted by an earlier consumer, not this one
            return -1
        return generation

    async def task_leased(self, generation: int) -> None:
        """The task started in *generation* became a lease; called *before* its delivery is
        acknowledged, so the consumer restarts with one slot less before the broker could
        send another task in its place."""
        self.slots.leased(generation)
        if self.slots.wanted() == "now":
            await self._logged(self.restart())

    def task_ended(self, generation: int, leased: bool) -> None:
        """The task started in *generation* ended."""
        if not self.slots.active:
            return
        self.slots.done(generation, leased)
        if self.slots.wanted() == "later" and self._refill is None:
            self._refill = self._session.loop.call_later(_REFILL_DELAY, self._refill_now)

    def _refill_now(self) -> None:
        self._refill = None
        if self.slots.wanted() is not None:
            self._spawn(self.restart())

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(self._logged(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _logged(self, coro: Awaitable[Any]) -> None:
        try:
            await coro
        except Exception as exc:  # a background task has nobody to raise to
            _LOGGER.warning("consuming task queue %s again failed: %s", self._queue, exc)
