"""Publishing one batch in windows (:mod:`kiwipy.rmq.send._batch` has the rules):
:class:`Sender` writes :data:`WINDOW` messages at a time with up to :data:`IN_FLIGHT` windows
unconfirmed, checks every confirm and records each message's outcome; :func:`run_within`
stops it when the batch's own time runs out.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

import aiormq.abc

from ... import exceptions
from ..connection import _amqp
from ..connection._session import PUBLISH, Session
from ..receive._replies import ReplyQueue
from . import _fastpublish

__all__ = ("IN_FLIGHT", "WINDOW", "Pending", "Sender", "run_within")

#: Messages per write.
WINDOW = 250
#: Windows unconfirmed at once.
IN_FLIGHT = 4


class Pending(NamedTuple):
    """One message of a batch, ready to publish."""

    message: _fastpublish.Outgoing
    correlation_id: str  # "" for a broadcast
    #: ``replies.expect(correlation_id, *reply)`` once published; ``None``: no reply wanted.
    reply: Optional[tuple[str, Optional[str]]]
    #: seconds the reply may take (its deadline is in the message: :mod:`kiwipy._deadlines`)
    deadline: Optional[float] = None


async def run_within(sender: Sender, timeout: float) -> None:
    """Run *sender* for at most *timeout* seconds, then stop it keeping what it wrote
    (:meth:`Sender.time_up`). Cancelling this cancels the batch as a whole."""
    running = asyncio.ensure_future(sender.run())
    try:
        await asyncio.wait((running,), timeout=max(0.0, timeout))
    except BaseException:
        running.cancel()
        raise
    if running.done():
        running.result()
        return
    sender.cutting = True
    running.cancel()
    await asyncio.wait((running,))
    if not running.cancelled() and running.exception() is not None:
        running.result()  # it failed on its own before the cut
    sender.time_up(timeout)


class _Window(NamedTuple):
    first: int  # index of its first message
    confirms: list[asyncio.Future[Any]]
    done: asyncio.Future[None]
    written_at: float  # loop time: its confirms are awaited recovery_timeout from then


class Sender:
    """Sends one batch; :attr:`futures` and :attr:`errors` hold the outcome."""

    def __init__(
        self,
        session: Session,
        replies: ReplyQueue,
        pending: Sequence[Pending],
        per_call: tuple[type[BaseException], ...],
    ) -> None:
        self._session = session
        self._replies = replies
        self._pending = pending
        self._per_call = per_call
        self._loop = session.loop
        self._timeout = float(session.options["recovery_timeout"])
        self._stopped = False
        self._in_flight: collections.deque[_Window] = collections.deque()
        self._sent = 0  # messages written so far
        #: set before the batch's own deadline cancels :meth:`run` (:meth:`time_up` follows)
        self.cutting = False
        self.futures: list[Optional[asyncio.Future[Any]]] = [None] * len(pending)
        self.errors: dict[int, BaseException] = {}

    async def run(self) -> None:
        in_flight, total = self._in_flight, len(self._pending)
        try:
            while self._sent < total and not self._stopped:
                while len(in_flight) >= IN_FLIGHT or (in_flight and in_flight[0].done.done()):
                    await self._settle_first()
                if self._stopped:
                    break
                try:
                    await self._send(self._sent)
                except Exception as exc:  # no channel to send on (connection lost, closed)
                    self._fail_range(self._sent, total, exc)
                    break
            while in_flight:
                await self._settle_first()
        except BaseException:
            if not self.cutting:  # cancelled by the caller: nobody will see any reply future
                self._forget_all()
            raise
        self._fail_range(self._sent, total, _NotSent())

    def time_up(self, timeout: float) -> None:
        """The batch ran out of time (module doc): messages written keep their futures, the
        unconfirmed ones are reported with a :data:`kiwipy.TimeoutError`, the rest as not
        sent."""
        for window in self._in_flight:
            for index, confirm in enumerate(window.confirms, window.first):
                self._record(index, confirm, f"the batch's {timeout:g} s")
        self._in_flight.clear()
        self._fail_range(self._sent, len(self._pending), _NotSent("the batch ran out of time"))

    async def _channel(self) -> aiormq.abc.AbstractChannel:
        """:returns: the publish channel once :func:`_fastpublish.start` may use it: open,
        the session not restoring anything after a reconnection, no other publish being
        written (waiting at most ``recovery_timeout``)."""
        deadline = self._loop.time() + self._timeout
        while True:
            await self._session.channel(PUBLISH)  # opened if needed
            channel = self._session.ready_channel()
            if channel is not None and _fastpublish.can_start(channel):
                return channel
            if self._loop.time() > deadline:
                exchange = self._pending[0].message.exchange
                raise _amqp.ConnectionGone(f"publishing to {exchange!r}: no usable channel in time")
            await asyncio.sleep(0.001 if channel is not None else 0.05)

    async def _send(self, first: int) -> None:
        """Publish the window of messages starting at index *first* (in flight at once)."""
        channel = await self._channel()
        window = self._pending[first : first + WINDOW]
        confirms, drained = _fastpublish.start(channel, [p.message for p in window], drain=True)
        # in the same step as the publish: no reply can come before
        for index, pending in enumerate(window, first):
            if pending.reply is not None:
                recipient, watch = pending.reply
                resend = pending.message if watch is None else None  # a task (not an RPC)
                future = self._replies.expect(pending.correlation_id, recipient, watch, resend)
                if pending.deadline is not None:
                    self._replies.deadline(pending.correlation_id, future, pending.deadline)
                self.futures[index] = future
        done = _all_done(self._loop, confirms)
        self._in_flight.append(_Window(first, confirms, done, self._loop.time()))
        self._sent += len(confirms)
        if drained is not None:
            await asyncio.wait((drained,))  # don't outrun the socket; its failure shows below

    async def _settle_first(self) -> None:
        """Settle the oldest window in flight; it stays in flight until settled (a cut in
        between leaves it to :meth:`time_up`)."""
        await self._settle(self._in_flight[0])
        self._in_flight.popleft()

    async def _settle(self, window: _Window) -> None:
        """Wait for the confirms of *window* and record the missing ones."""
        # asyncio.wait, not wait_for: on Python < 3.12 wait_for swallows a cancellation that
        # arrives as the confirms complete, and the batch would then outlive its cut.
        left = window.written_at + self._timeout - self._loop.time()
        await asyncio.wait((window.done,), timeout=max(0.0, left))
        for index, confirm in enumerate(window.confirms, window.first):
            self._record(index, confirm)

    def _record(self, index: int, confirm: asyncio.Future[Any], waited: str = "") -> None:
        """Record the outcome of message *index* from its *confirm*. A confirm still awaited
        after *waited* (default ``recovery_timeout``) leaves the message's fate open: it keeps
        its reply future, and a refusal that comes later fails that future."""
        if not confirm.done():
            waited = waited or f"{self._timeout:g} s"
            self.errors[index] = exceptions.TimeoutError(
                f"message {index} was written but not confirmed within {waited}: it may "
                "have been delivered (its reply future is kept)"
            )
            self._stopped = True
            confirm.add_done_callback(functools.partial(self._confirmed_late, index))
            return
        error = self._confirm_error(confirm, self._pending[index].message)
        if error is not None:
            self._replies.forget(self._pending[index].correlation_id)
            self.futures[index] = None
            self.errors[index] = error
            self._stopped = self._stopped or not isinstance(error, self._per_call)

    def _confirmed_late(self, index: int, confirm: asyncio.Future[Any]) -> None:
        """A confirm that came after the batch gave up waiting for it: a refused message
        fails its kept reply future (it can never be answered)."""
        error = self._confirm_error(confirm, self._pending[index].message)
        future = self.futures[index]
        if error is None or future is None:
            return
        self._replies.forget(self._pending[index].correlation_id)
        if not future.done():
            future.set_exception(error)
            future.exception()  # the caller may have dropped it: no warning at exit

    def _confirm_error(
        self, confirm: asyncio.Future[Any], message: _fastpublish.Outgoing
    ) -> Optional[BaseException]:
        what = f"publishing to {message.exchange!r}/{message.routing_key!r}"
        if confirm.cancelled():
            return _amqp.ConnectionGone(f"{what}: the channel closed before the confirm")
        exc = confirm.exception()
        if exc is None:
            return None
        if isinstance(exc, _amqp.SEND_ERRORS):
            return _amqp.translate(exc, what)
        return exc

    def _forget_all(self) -> None:
        for index, future in enumerate(self.futures):
            if future is not None:
                self._replies.forget(self._pending[index].correlation_id)
                self.futures[index] = None
        self._in_flight.clear()

    def _fail_range(self, start: int, stop: int, exc: BaseException) -> None:
        for index in range(start, stop):
            self.errors.setdefault(index, exc)
            self.futures[index] = None


class _NotSent(exceptions.DeliveryFailed):
    def __init__(self, why: str = "an earlier message of the batch was not confirmed") -> None:
        super().__init__(f"not sent: {why}")


def _all_done(
    loop: asyncio.AbstractEventLoop, futures: Sequence[asyncio.Future[Any]]
) -> asyncio.Future[None]:
    """:returns: a future resolved once every one of *futures* is done (one callback each,
    none of asyncio.wait's bookkeeping)."""
    done: asyncio.Future[None] = loop.create_future()
    left = [len(futures)]

    def count(_: asyncio.Future[Any]) -> None:
        left[0] -= 1
        if left[0] == 0 and not done.done():
            done.set_result(None)

    if not futures:
        done.set_result(None)
    for future in futures:
        future.add_done_callback(count)
    return done
