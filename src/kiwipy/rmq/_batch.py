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
  :mod:`kiwipy.rmq._fastpublish`), with up to :data:`IN_FLIGHT` windows unconfirmed; the
  call returns once every confirm arrived.
* A message is reported sent only once the broker confirmed it. A returned RPC request
  (nobody holds its recipient) fails that call only: the batch goes on (pausing a hundred
  processes by pid, some of which are gone, is the typical use). Any other missing
  confirm (a returned task, nacked, channel or connection lost, no confirm within
  ``recovery_timeout``) stops the batch: no further window is sent and the windows in
  flight are awaited. Then :class:`~kiwipy.BatchSendError` says which messages failed;
  their reply futures are dropped. Nothing is resent automatically: unlike ``task_send``, a
  batch never sends a message twice behind the caller's back. A broadcast nobody listens
  to is confirmed (it is not mandatory), as with ``broadcast_send``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Iterable, Sequence
from typing import Any, Callable, NamedTuple, Optional

import aiormq.abc

from .. import _broadcasts, exceptions
from . import _amqp, _fastpublish, _outgoing, protocol
from ._outgoing import MessageTarget, TaskTarget
from ._replies import ReplyQueue
from ._session import PUBLISH, Session

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


# Tasks


async def send_tasks(
    target: TaskTarget, tasks: Iterable[Any], no_reply: bool = False
) -> list[Optional[asyncio.Future[Any]]]:
    """Send *tasks* pipelined (module doc).

    :returns: one entry per task: its reply future, or ``None`` with *no_reply*.
    :raises BatchSendError: if any task was not confirmed.
    """
    pending = await _prepare(functools.partial(_task, target, no_reply), tasks)
    return await _send(target.session, target.replies, pending, per_call=())


def _task(target: TaskTarget, no_reply: bool, task: Any) -> Pending:
    body = _outgoing.encode(target.session, protocol.encode_task(task, no_reply))
    message, correlation_id = _outgoing.task(target, body)
    return Pending(message, correlation_id, None if no_reply else (target.queue, None))


# RPCs


async def send_rpcs(
    target: MessageTarget, calls: Iterable[tuple[Any, Any]]
) -> list[asyncio.Future[Any]]:
    """Send the RPC requests *calls* (``(recipient_id, msg)`` pairs) pipelined (module doc).

    :returns: the reply future of each call.
    :raises BatchSendError: if any call failed (an unknown recipient fails only its call).
    """
    pending = await _prepare(functools.partial(_rpc, target), calls)
    unroutable = (exceptions.UnroutableError,)
    futures = await _send(target.session, target.replies, pending, per_call=unroutable)
    return [future for future in futures if future is not None]  # all of them: none failed


def _rpc(target: MessageTarget, call: tuple[Any, Any]) -> Pending:
    recipient_id, msg = call
    body = _outgoing.encode(target.session, msg)
    message, correlation_id, watch = _outgoing.rpc(target, recipient_id, body)
    return Pending(message, correlation_id, (message.routing_key, watch))


# Broadcasts


async def send_broadcasts(target: MessageTarget, broadcasts: Iterable[tuple[Any, ...]]) -> None:
    """Send *broadcasts* (tuples of ``broadcast_send``'s positional arguments) pipelined
    (module doc).

    :raises TypeError: if an item is not a tuple of 1 to 4 elements (nothing is sent).
    :raises BatchSendError: if any broadcast was not confirmed (its ``futures`` are all
        ``None``).
    """
    pending = await _prepare(functools.partial(_broadcast, target), broadcasts)
    await _send(target.session, target.replies, pending, per_call=())


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
) -> list[Optional[asyncio.Future[Any]]]:
    """Publish *pending* in windows; failures of the *per_call* kinds do not stop the batch.

    :raises BatchSendError: if any message failed.
    """
    sender = _Sender(session, replies, pending, per_call)
    await sender.run()
    futures, errors = sender.futures, sender.errors
    if errors:
        raise exceptions.BatchSendError(list(futures), errors) from errors[min(errors)]
    return futures


class _Window(NamedTuple):
    first: int  # index of its first message
    confirms: list[asyncio.Future[Any]]
    done: asyncio.Future[None]


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
        self.futures: list[Optional[asyncio.Future[Any]]] = [None] * len(pending)
        self.errors: dict[int, BaseException] = {}

    async def run(self) -> None:
        in_flight: collections.deque[_Window] = collections.deque()
        sent, total = 0, len(self._pending)
        try:
            while sent < total and not self._stopped:
                while len(in_flight) >= IN_FLIGHT or (in_flight and in_flight[0].done.done()):
                    await self._settle(in_flight.popleft())
                if self._stopped:
                    break
                try:
                    window = await self._send(sent)
                except Exception as exc:  # no channel to send on (connection lost, closed)
                    self._fail_range(sent, total, exc)
                    break
                in_flight.append(window)
                sent += len(window.confirms)
            while in_flight:
                await self._settle(in_flight.popleft())
        except BaseException:  # cancelled: nobody will look at the replies
            for window in in_flight:
                self._forget(window)
            raise
        self._fail_range(sent, total, _NotSent())

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

    async def _send(self, first: int) -> _Window:
        """Publish the window of messages starting at index *first*."""
        channel = await self._channel()
        window = self._pending[first : first + WINDOW]
        confirms, drained = _fastpublish.start(channel, [p.message for p in window], drain=True)
        # in the same step as the publish: no reply can come before
        for index, pending in enumerate(window, first):
            if pending.reply is not None:
                recipient, watch = pending.reply
                resend = pending.message if watch is None else None  # a task (not an RPC)
                self.futures[index] = self._replies.expect(
                    pending.correlation_id, recipient, watch, resend
                )
        sending = _Window(first, confirms, _all_done(self._loop, confirms))
        if drained is not None:
            await asyncio.wait((drained,))  # don't outrun the socket; its failure shows below
        return sending

    async def _settle(self, window: _Window) -> None:
        """Wait for the confirms of *window* and record the missing ones."""
        try:
            await asyncio.wait_for(asyncio.shield(window.done), self._timeout)
        except asyncio.TimeoutError:
            pass
        for index, confirm in enumerate(window.confirms, window.first):
            error = self._confirm_error(confirm, self._pending[index].message)
            if error is not None:
                self._replies.forget(self._pending[index].correlation_id)
                self.futures[index] = None
                self.errors[index] = error
                self._stopped = self._stopped or not isinstance(error, self._per_call)

    def _confirm_error(
        self, confirm: asyncio.Future[Any], message: _fastpublish.Outgoing
    ) -> Optional[BaseException]:
        what = f"publishing to {message.exchange!r}/{message.routing_key!r}"
        if not confirm.done():
            confirm.cancel()
            return _amqp.ConnectionGone(f"{what}: no confirm within {self._timeout:g} s")
        if confirm.cancelled():
            return _amqp.ConnectionGone(f"{what}: the channel closed before the confirm")
        exc = confirm.exception()
        if exc is None:
            return None
        if isinstance(exc, _amqp.SEND_ERRORS):
            return _amqp.translate(exc, what)
        return exc

    def _forget(self, window: _Window) -> None:
        for index in range(window.first, window.first + len(window.confirms)):
            self._replies.forget(self._pending[index].correlation_id)
            self.futures[index] = None

    def _fail_range(self, start: int, stop: int, exc: BaseException) -> None:
        for index in range(start, stop):
            self.errors.setdefault(index, exc)
            self.futures[index] = None


class _NotSent(exceptions.DeliveryFailed):
    def __init__(self) -> None:
        super().__init__("not sent: an earlier message of the batch was not confirmed")


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
