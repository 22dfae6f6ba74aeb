"""``task_send_many``, ``rpc_send_many`` and ``broadcast_send_many``: many messages in flight
at once, every confirm still checked.

Rules:

* Every message is encoded first (yielding to the loop between slices, so heartbeats go
  on): one that cannot be encoded (or is over ``max_message_size``, or a malformed
  broadcast item) raises before anything is sent.
* Each message is exactly what ``task_send`` (``rpc_send``, ``broadcast_send``) puts on the
  wire: same exchange, routing key, properties and body, mandatory except for broadcasts;
  its reply future (none for a broadcast) is registered in the same loop step as its
  publish, so no reply can arrive before it.
* Messages go out in *windows* of :data:`WINDOW` (one write each, see
  :mod:`kiwipy.rmq.send._fastpublish`), with up to :data:`IN_FLIGHT` windows unconfirmed; the
  call returns once every confirm arrived.
* A message is reported sent only once the broker confirmed it. A returned RPC request
  (nobody holds its recipient) fails that call only: the batch goes on (pausing a hundred
  processes by pid, some of which are gone, is the typical use). Any other missing
  confirm (a returned task, nacked, channel or connection lost, no confirm within
  ``recovery_timeout``) stops the batch: no further window is sent and the windows in
  flight are awaited. Then :class:`~kiwipy.BatchSendError` says which messages failed;
  their reply futures are dropped, except those of messages still awaiting their confirm
  (next rule). Nothing is resent automatically: unlike ``task_send``, a
  batch never sends a message twice behind the caller's back. A broadcast nobody listens
  to is confirmed (it is not mandatory), as with ``broadcast_send``.
* A message written whose confirm has not come in time (``recovery_timeout``, or the
  batch's own ``timeout``) may have gone out: it is reported with a
  :data:`kiwipy.TimeoutError` and *keeps* its reply future, which fails if the broker
  refuses the message after all (nack, return, channel lost): every future still
  resolves. A batch given a ``timeout`` (the thread facade always gives one) stops when it
  runs out: no further window is sent, and the messages not written fail as not sent.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Iterable, Sequence
from typing import Any, Callable, NamedTuple, Optional

import aiormq.abc

from ... import _broadcasts, exceptions
from .. import protocol
from ..connection import _amqp
from ..connection._session import PUBLISH, Session
from ..receive._replies import ReplyQueue
from . import _fastpublish, _outgoing
from ._outgoing import MessageTarget, TaskTarget

__all__ = (
    "IN_FLIGHT",
    "WINDOW",
    "MessageTarget",
    "Pending",
    "TaskTarget",
    "send_broadcasts",
    "send_rpcs",
    "send_tasks",
)

#: Messages per write.
WINDOW = 250
#: Windows unconfirmed at once.
IN_FLIGHT = 4
#: Messages encoded between two yields to the event loop.
_ENCODE_SLICE = 200


class Pending(NamedTuple):
    """One message of a batch, ready to publish."""

    message: _fastpublish.Outgoing
    correlation_id: str  # "" for a broadcast
    #: ``replies.expect(correlation_id, *reply)`` once published; ``None``: no reply wanted.
    reply: Optional[tuple[str, Optional[str]]]
    #: seconds the reply may take (its deadline is in the message: :mod:`kiwipy._deadlines`)
    deadline: Optional[float] = None


# Tasks


async def send_tasks(
    target: TaskTarget,
    tasks: Iterable[Any],
    no_reply: bool = False,
    timeout: Optional[float] = None,
    call_timeout: Optional[float] = None,
) -> list[Optional[asyncio.Future[Any]]]:
    """Send *tasks* pipelined (module doc), within *timeout* seconds if given, each with a
    deadline of *call_timeout* seconds if given.

    :returns: one entry per task: its reply future, or ``None`` with *no_reply*.
    :raises BatchSendError: if any task was not confirmed.
    """
    pending = await _prepare(functools.partial(_task, target, no_reply, call_timeout), tasks)
    return await _send(target.session, target.replies, pending, per_call=(), timeout=timeout)


def _task(target: TaskTarget, no_reply: bool, deadline: Optional[float], task: Any) -> Pending:
    body = _outgoing.encode(target.session, protocol.encode_task(task, no_reply))
    message, correlation_id = _outgoing.task(target, body, deadline)
    reply = None if no_reply else (target.queue, None)
    return Pending(message, correlation_id, reply, deadline)


# RPCs


async def send_rpcs(
    target: MessageTarget,
    calls: Iterable[tuple[Any, Any]],
    timeout: Optional[float] = None,
    call_timeout: Optional[float] = None,
) -> list[asyncio.Future[Any]]:
    """Send the RPC requests *calls* (``(recipient_id, msg)`` pairs) pipelined (module doc),
    within *timeout* seconds if given, each with a deadline of *call_timeout* seconds if given.

    :returns: the reply future of each call.
    :raises BatchSendError: if any call failed (an unknown recipient fails only its call).
    """
    pending = await _prepare(functools.partial(_rpc, target, call_timeout), calls)
    unroutable = (exceptions.UnroutableError,)
    futures = await _send(
        target.session, target.replies, pending, per_call=unroutable, timeout=timeout
    )
    return [future for future in futures if future is not None]  # all of them: none failed


def _rpc(target: MessageTarget, deadline: Optional[float], call: tuple[Any, Any]) -> Pending:
    recipient_id, msg = call
    body = _outgoing.encode(target.session, msg)
    message, correlation_id, watch = _outgoing.rpc(target, recipient_id, body, deadline)
    return Pending(message, correlation_id, (message.routing_key, watch), deadline)


# Broadcasts


async def send_broadcasts(
    target: MessageTarget, broadcasts: Iterable[tuple[Any, ...]], timeout: Optional[float] = None
) -> None:
    """Send *broadcasts* (tuples of ``broadcast_send``'s positional arguments) pipelined
    (module doc), within *timeout* seconds if given.

    :raises TypeError: if an item is not a tuple of 1 to 4 elements (nothing is sent).
    :raises BatchSendError: if any broadcast was not confirmed (its ``futures`` are all
        ``None``).
    """
    pending = await _prepare(functools.partial(_broadcast, target), broadcasts)
    await _send(target.session, target.replies, pending, per_call=(), timeout=timeout)


def _broadcast(target: MessageTarget, item: tuple[Any, ...]) -> Pending:
    broadcast = protocol.Broadcast(*_broadcasts.batch_arguments(item))
    body = _outgoing.encode(target.session, protocol.encode_broadcast(broadcast))
    return Pending(
        _outgoing.broadcast(target, body), "", None
    )  # no correlation id: no reply is awaited


# Shared


async def _prepare(make: Callable[[Any], Pending], items: Iterable[Any]) -> list[Pending]:
    """:returns: ``make(item)`` for each of *items*, yielding to the loop between slices."""
    made: list[Pending] = []
    for item in items:
        made.append(make(item))
        if len(made) % _ENCODE_SLICE == 0:
            await asyncio.sleep(0)
    return made


async def _send(
    session: Session,
    replies: ReplyQueue,
    pending: Sequence[Pending],
    per_call: tuple[type[BaseException], ...],
    timeout: Optional[float] = None,
) -> list[Optional[asyncio.Future[Any]]]:
    """Publish *pending* in windows; failures of the *per_call* kinds do not stop the batch,
    which ends after *timeout* seconds if given (module doc).

    :raises BatchSendError: if any message failed.
    """
    sender = _Sender(session, replies, pending, per_call)
    if timeout is None:
        await sender.run()
    else:
        await _run_within(sender, timeout)
    futures, errors = sender.futures, sender.errors
    if errors:
        raise exceptions.BatchSendError(list(futures), errors) from errors[min(errors)]
    return futures


async def _run_within(sender: _Sender, timeout: float) -> None:
    """Run *sender* for at most *timeout* seconds, then stop it keeping what it wrote
    (:meth:`_Sender.time_up`). Cancelling this cancels the batch as a whole."""
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


class _Sender:
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
