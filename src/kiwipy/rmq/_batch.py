"""``task_send_many``: many tasks in flight at once, every confirm still checked.

Rules:

* Every task is encoded first (yielding to the loop between slices, so heartbeats go on):
  one that cannot be encoded (or is over ``max_message_size``) raises before anything is
  sent.
* Each message is exactly what ``task_send`` puts on the wire (same properties, persistent,
  mandatory, same body), with its reply future registered before it is published.
* Messages go out in *windows* of :data:`WINDOW` (one write each, see
  :mod:`kiwipy.rmq._fastpublish`), with up to :data:`IN_FLIGHT` windows unconfirmed; the
  call returns once every confirm arrived.
* A task is reported sent only once the broker confirmed it. If any confirm is missing
  (unroutable, nacked, channel or connection lost, no confirm within ``recovery_timeout``)
  no further window is sent, the windows in flight are awaited, and
  :class:`~kiwipy.BatchSendError` says which tasks were not confirmed; their reply futures
  are dropped. Nothing is resent automatically: unlike ``task_send``, a batch never sends a
  task twice behind the caller's back.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Optional

import aiormq.abc

from .. import exceptions
from . import _amqp, _fastpublish, protocol
from ._replies import ReplyQueue
from ._session import PUBLISH, Session

__all__ = ("IN_FLIGHT", "WINDOW", "TaskTarget", "encode_tasks", "send_tasks")

#: Messages per write.
WINDOW = 250
#: Windows unconfirmed at once.
IN_FLIGHT = 4
#: Tasks encoded between two yields to the event loop.
_ENCODE_SLICE = 200


class TaskTarget(NamedTuple):
    """Where the tasks of a publisher go (what ``RmqTaskPublisher.task_send`` uses)."""

    session: Session
    exchange: str
    queue: str
    replies: ReplyQueue
    content_type: Optional[str]


class _Window(NamedTuple):
    first: int  # index of its first task
    confirms: list[asyncio.Future[Any]]
    correlation_ids: list[str]
    done: asyncio.Future[None]


async def encode_tasks(session: Session, tasks: Iterable[Any], no_reply: bool) -> list[bytes]:
    """:returns: the body of each task, as ``task_send`` encodes it.

    :raises EncodeError: if one cannot be encoded. :raises MessageTooLarge: if one is over
        ``max_message_size``.
    """
    encode, limit = session.encoder.encode, session.max_message_size
    bodies: list[bytes] = []
    for task in tasks:
        body = encode(protocol.encode_task(task, no_reply))
        if len(body) > limit:
            raise exceptions.MessageTooLarge(len(body), limit)
        bodies.append(body)
        if len(bodies) % _ENCODE_SLICE == 0:
            await asyncio.sleep(0)
    return bodies


async def send_tasks(
    target: TaskTarget, tasks: Iterable[Any], no_reply: bool = False
) -> list[Optional[asyncio.Future[Any]]]:
    """Send *tasks* pipelined (module doc).

    :returns: one entry per task: its reply future, or ``None`` with *no_reply*.
    :raises BatchSendError: if any task was not confirmed.
    """
    bodies = await encode_tasks(target.session, tasks, no_reply)
    futures: list[Optional[asyncio.Future[Any]]] = [None] * len(bodies)
    errors: dict[int, BaseException] = {}
    sender = _Sender(target, bodies, no_reply, futures, errors)
    await sender.run()
    if errors:
        raise exceptions.BatchSendError(list(futures), errors) from errors[min(errors)]
    return futures


class _Sender:
    def __init__(
        self,
        target: TaskTarget,
        bodies: Sequence[bytes],
        no_reply: bool,
        futures: list[Optional[asyncio.Future[Any]]],
        errors: dict[int, BaseException],
    ) -> None:
        self._target = target
        self._bodies = bodies
        self._no_reply = no_reply
        self._futures = futures
        self._errors = errors
        self._loop = target.session.loop
        self._timeout = float(target.session.options["recovery_timeout"])
        self._what = f"publishing to {target.exchange!r}/{target.queue!r}"

    async def run(self) -> None:
        in_flight: collections.deque[_Window] = collections.deque()
        sent, total = 0, len(self._bodies)
        try:
            while sent < total and not self._errors:
                while len(in_flight) >= IN_FLIGHT or (in_flight and in_flight[0].done.done()):
                    await self._settle(in_flight.popleft())
                if self._errors:
                    break
                try:
                    window = await self._send(sent, self._bodies[sent : sent + WINDOW])
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
        session = self._target.session
        deadline = self._loop.time() + self._timeout
        while True:
            await session.channel(PUBLISH)  # opened if needed
            channel = session.ready_channel()
            if channel is not None and _fastpublish.can_start(channel):
                return channel
            if self._loop.time() > deadline:
                raise _amqp.ConnectionGone(f"{self._what}: no usable channel in time")
            await asyncio.sleep(0.001 if channel is not None else 0.05)

    async def _send(self, first: int, bodies: Sequence[bytes]) -> _Window:
        target = self._target
        channel = await self._channel()
        messages, ids = [], []
        for body in bodies:
            correlation_id = _amqp.new_correlation_id()
            props = _amqp.properties(
                persistent=True,
                correlation_id=correlation_id,
                reply_to=target.replies.name,
                content_type=target.content_type,
            )
            messages.append(_fastpublish.Outgoing(target.exchange, target.queue, body, props, True))
            ids.append(correlation_id)
        confirms, drained = _fastpublish.start(channel, messages, drain=True)
        if not self._no_reply:  # in the same step as the publish: no reply can come before
            for offset, correlation_id in enumerate(ids):
                self._futures[first + offset] = target.replies.expect(correlation_id, target.queue)
        window = _Window(first, confirms, ids, _all_done(self._loop, confirms))
        if drained is not None:
            await asyncio.wait((drained,))  # don't outrun the socket; its failure shows below
        return window

    async def _settle(self, window: _Window) -> None:
        """Wait for the confirms of *window* and record the missing ones."""
        try:
            await asyncio.wait_for(asyncio.shield(window.done), self._timeout)
        except asyncio.TimeoutError:
            pass
        for offset, confirm in enumerate(window.confirms):
            error = self._confirm_error(confirm)
            if error is not None:
                index = window.first + offset
                self._errors[index] = error
                self._target.replies.forget(window.correlation_ids[offset])
                self._futures[index] = None

    def _confirm_error(self, confirm: asyncio.Future[Any]) -> Optional[BaseException]:
        if not confirm.done():
            confirm.cancel()
            return _amqp.ConnectionGone(f"{self._what}: no confirm within {self._timeout:g} s")
        if confirm.cancelled():
            return _amqp.ConnectionGone(f"{self._what}: the channel closed before the confirm")
        exc = confirm.exception()
        if exc is None:
            return None
        if isinstance(exc, _amqp.SEND_ERRORS):
            return _amqp.translate(exc, self._what)
        return exc

    def _forget(self, window: _Window) -> None:
        for offset, correlation_id in enumerate(window.correlation_ids):
            self._target.replies.forget(correlation_id)
            self._futures[window.first + offset] = None

    def _fail_range(self, start: int, stop: int, exc: BaseException) -> None:
        for index in range(start, stop):
            self._errors.setdefault(index, exc)
            self._futures[index] = None


class _NotSent(exceptions.DeliveryFailed):
    def __init__(self) -> None:
        super().__init__("not sent: an earlier task of the batch was not confirmed")


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
