"""The thread facade's short way to send a task: encoded on the caller's thread, published
on the loop in one step, the caller woken by the confirm itself.

``ThreadCommunicator.task_send`` through the core costs, on the loop thread, a task, a chain
of five coroutines, a timer for the publish deadline and two extra loop iterations per
message. :class:`TaskLane` does what ``RmqTaskPublisher.task_send`` does (same message, same
reply bookkeeping: see :mod:`kiwipy.rmq.send._batch`) without them:

* :meth:`TaskLane.encode` runs on the caller's thread, so a large or slow-to-encode task
  never blocks the event loop (and its heartbeats);
* :meth:`TaskLane.start` runs on the loop: it publishes with :func:`._fastpublish.start`
  when the default task queue is declared and the publish channel is open and idle, and
  reports the outcome through a callback when the confirm arrives.

When it cannot (not ready yet, the channel busy) or when the quick publish fails for any
reason but an unroutable task, the facade sends the task through the core's ``task_send``
instead, with its full retry policy: the outcome the caller sees is the one ``task_send``
gives.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

from aiormq import exceptions as amqp_errors

from ..._quick import RETRY, Done
from .. import protocol
from ..connection import _amqp
from . import _fastpublish, _outgoing
from ._outgoing import MessageTarget, TaskTarget

__all__ = ("MessageLane", "TaskLane")


class TaskLane:
    """The quick path for one communicator's default task queue.

    :param target: returns the queue's :class:`~._outgoing.TaskTarget` once it is declared
        (``None`` before).
    """

    def __init__(self, target: Callable[[], Optional[TaskTarget]]) -> None:
        self._target = target
        self._ready: Optional[TaskTarget] = None

    def encode(self, task: Any, no_reply: bool) -> Optional[bytes]:
        """:returns: the task's body, as ``task_send`` encodes it; ``None`` before the queue
        is ready (any thread).

        :raises EncodeError: if it cannot be encoded.
        :raises MessageTooLarge: if it is over ``max_message_size``.
        """
        target = self._ready
        if target is None:
            return None
        return _outgoing.encode(target.session, protocol.encode_task(task, no_reply))

    def start(self, body: bytes, no_reply: bool, done: Done) -> bool:
        """Publish *body* now if possible (loop thread only); ``done(error, reply)`` is
        called on the loop: ``error`` is ``None`` once confirmed, the translated error for
        an unroutable task, or :data:`~kiwipy._quick.RETRY` when the core's ``task_send``
        should send it. :returns: ``False`` if ``task_send`` must be used instead."""
        target = self._target()
        self._ready = target
        if target is None:
            return False
        channel = target.session.ready_channel()
        if channel is None or not _fastpublish.can_start(channel):
            return False
        message, correlation_id = _outgoing.task(target, body)
        (confirm,), _ = _fastpublish.start(channel, (message,))
        reply = (
            None if no_reply else target.replies.expect(correlation_id, target.queue, None, message)
        )

        def confirmed(future: asyncio.Future[Any]) -> None:
            error = _outcome(future, target)
            if error is not None:
                target.replies.forget(correlation_id)
            done(error, None if error is not None else reply)

        confirm.add_done_callback(confirmed)
        return True

    def prime(self) -> None:
        """Look for the queue's target again (loop thread), so :meth:`encode` can work."""
        self._ready = self._target()


def _outcome(confirm: asyncio.Future[Any], target: TaskTarget) -> Optional[BaseException]:
    if confirm.cancelled():
        return RETRY
    exc = confirm.exception()
    if exc is None:
        return None
    if isinstance(exc, amqp_errors.PublishError):  # no queue bound: what task_send raises
        return _amqp.translate(exc, f"publishing to {target.exchange!r}/{target.queue!r}")
    return RETRY


class MessageLane:
    """The quick path for ``rpc_send`` and ``broadcast_send`` (as ``RmqPublisher`` sends
    them: not resent on failure, every failure translated as ``publish(retry=False)``
    translates it).

    :param target: returns the publisher's :class:`~._outgoing.MessageTarget` once it is
        connected.
    """

    def __init__(self, target: Callable[[], Optional[MessageTarget]]) -> None:
        self._target = target
        self._ready: Optional[MessageTarget] = None

    def encode(self, obj: Any) -> Optional[bytes]:
        """:returns: *obj* encoded (any thread), ``None`` before the publisher is ready."""
        target = self._ready
        if target is None:
            return None
        return _outgoing.encode(target.session, obj)

    def prime(self) -> None:
        """Look for the publisher's target again (loop thread)."""
        self._ready = self._target()

    def start_rpc(self, recipient_id: Any, body: bytes, done: Done) -> bool:
        """Send an RPC request (loop thread); ``done(error, reply_future)`` follows."""
        target = self._channel_target()
        if target is None:
            return False
        message, correlation_id, watch = _outgoing.rpc(target, recipient_id, body)
        reply = target.replies.expect(correlation_id, message.routing_key, watch)

        def confirmed(error: Optional[BaseException], _value: Any) -> None:
            if error is not None:
                target.replies.forget(correlation_id)
            done(error, None if error is not None else reply)

        started = False
        try:
            started = self._publish(target, message, confirmed)
        finally:
            if not started:  # raised, or the core sends it: no waiter nor watch is left behind
                target.replies.forget(correlation_id)
        return started

    def start_broadcast(self, body: bytes, done: Done) -> bool:
        """Send a broadcast (loop thread); ``done(error, ack_frame)`` follows."""
        target = self._channel_target()
        if target is None:
            return False
        return self._publish(target, _outgoing.broadcast(target, body), done)

    def _channel_target(self) -> Optional[MessageTarget]:
        target = self._ready = self._target()
        if target is None:
            return None
        channel = target.session.ready_channel()
        return target if channel is not None and _fastpublish.can_start(channel) else None

    def _publish(self, target: MessageTarget, message: _fastpublish.Outgoing, done: Done) -> bool:
        channel = target.session.ready_channel()
        if channel is None:
            return False
        what = f"publishing to {message.exchange!r}/{message.routing_key!r}"
        (confirm,), _ = _fastpublish.start(channel, (message,))

        def confirmed(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                done(_amqp.ConnectionGone(f"{what}: the channel closed before the confirm"), None)
            elif future.exception() is not None:
                done(_translate(future.exception(), what), None)
            else:
                done(None, future.result())

        confirm.add_done_callback(confirmed)
        return True


def _translate(exc: Optional[BaseException], what: str) -> BaseException:
    if isinstance(exc, _amqp.SEND_ERRORS):
        return _amqp.translate(exc, what)
    return exc if exc is not None else _amqp.ConnectionGone(what)
