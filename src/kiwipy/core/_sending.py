"""What a communicator of the shared core (:mod:`kiwipy.core`) sends through its broker
(tasks, RPCs, broadcasts, and the replies to the requests it handles), and the replies it
waits for.

Every request that expects a reply registers a future under its correlation id
(:class:`kiwipy._replies.Waiters`), bounded by its deadline (:mod:`kiwipy._deadlines`). The
broker posts each reply to the communicator's loop, where :meth:`Sender.on_reply` resolves
that future; a sender cancelling the future of a task or an RPC tells the broker, so the task
is not started any more or the RPC handler is cancelled (:mod:`kiwipy._cancels`).

Sending from another thread (the thread facade's tasks and RPCs): the message is encoded and
handed to the broker on the caller's thread, which gets a thread-world future at once. Its
registration is posted to the loop *before* the broker takes the message, and the broker
posts the reply to that loop too, so the reply always finds it; a send that fails posts its
removal after it. Cancelling such a task's future marks the task cancelled on the
cancelling thread itself, so a task sent after the cancel is taken after it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import uuid
from typing import Any, Callable, Optional

from .. import _deadlines, _replies, exceptions
from .._outcome import encode_reply
from .._portal import follow
from ._broker import Broker, Connection, Message, Payload
from ._codec import BROADCASTS, Codec

__all__ = ("Sender",)

# The logger of the communicator this sender belongs to.
_LOGGER = logging.getLogger("kiwipy.core._communicator")


class Sender:
    """Sends one communicator's messages through its broker and matches the replies it
    receives to the futures waiting for them.

    :param broker: the communicator's broker.
    :param codec: the communicator's encoding and tracing.
    :param new_future: makes a future on the communicator's loop.
    """

    def __init__(
        self, broker: Broker, codec: Codec, new_future: Callable[[], asyncio.Future[Any]]
    ) -> None:
        self._broker = broker
        self._codec = codec
        self._replies: _replies.Waiters[None] = _replies.Waiters(new_future)

    @property
    def waiting(self) -> int:
        """The number of replies waited for."""
        return len(self._replies)

    # Tasks

    def publish_task(
        self,
        queue: str,
        payload: Payload,
        no_reply: bool,
        connection: Connection,
        timeout: Optional[float] = None,
    ) -> Optional[asyncio.Future[Any]]:
        """Queue the task *payload* on *queue*.

        :returns: the future of its outcome, unless *no_reply*."""
        message = self._task_message(queue, payload, connection, timeout)
        self._broker.publish(queue, message)
        return self._expect_task(queue, message, no_reply)

    def publish_tasks(
        self,
        queue: str,
        payloads: list[Payload],
        no_reply: bool,
        connection: Connection,
        timeout: Optional[float],
    ) -> list[Optional[asyncio.Future[Any]]]:
        """Queue the tasks *payloads* on *queue* in one call to the broker (all or none).

        :returns: the futures of their outcomes (``None`` each with *no_reply*)."""
        messages = [self._task_message(queue, p, connection, timeout) for p in payloads]
        self._broker.publish_many(queue, messages)
        return [self._expect_task(queue, m, no_reply) for m in messages]

    def publish_task_now(
        self,
        queue: str,
        payload: Payload,
        no_reply: bool,
        connection: Connection,
        timeout: Optional[float] = None,
    ) -> Optional[concurrent.futures.Future[Any]]:
        """:meth:`publish_task` from any thread (module doc, "Sending from another thread").

        :returns: the thread-world future of its outcome, unless *no_reply*."""
        message = self._task_message(queue, payload, connection, timeout)
        if no_reply:
            self._broker.publish(queue, message)
            return None
        target = self._send_from_thread(
            connection,
            message.correlation_id,
            functools.partial(self._expect_outcome, queue, message, False),
            functools.partial(self._broker.publish, queue, message),
        )
        # a cancel marks the task on the cancelling thread, not later on the loop
        target.add_done_callback(functools.partial(self._on_direct_task_done, queue, message))
        return target

    def _task_message(
        self, queue: str, payload: Payload, connection: Connection, timeout: Optional[float]
    ) -> Message:
        correlation_id = str(uuid.uuid4())
        payload = self._codec.traced(payload, "task", queue, correlation_id)
        message = Message(payload, correlation_id, connection)
        message.deadline = _deadlines.absolute(timeout)
        return message

    def _expect_task(
        self, queue: str, message: Message, no_reply: bool
    ) -> Optional[asyncio.Future[Any]]:
        return None if no_reply else self._expect_outcome(queue, message)

    def _expect_outcome(
        self, queue: str, message: Message, marks: bool = True
    ) -> asyncio.Future[Any]:
        """:param marks: whether cancelling the future marks the task cancelled (else the
        thread-world future of a send from another thread does, on the cancelling thread)."""
        future = self._expect(message.correlation_id, _deadlines.remaining(message.deadline))
        future.add_done_callback(functools.partial(self._on_task_done, queue, message, marks))
        return future

    def _on_task_done(
        self, queue: str, message: Message, marks: bool, future: asyncio.Future[Any]
    ) -> None:
        """A task whose future its sender cancelled is not started any more: the broker
        marks it so for the worker that takes it; no reply is awaited for it."""
        if future.cancelled():
            self._forget(message.correlation_id)
            if marks:
                self._mark_cancelled(queue, message)

    def _mark_cancelled(self, queue: str, message: Message) -> None:
        try:
            self._broker.cancel_task(queue, message)
        except exceptions.KiwiError as exc:  # the worker will just run it
            _LOGGER.warning("could not mark task %s cancelled: %s", message.correlation_id, exc)

    def _on_direct_task_done(
        self, queue: str, message: Message, target: concurrent.futures.Future[Any]
    ) -> None:
        if target.cancelled():  # at once: a send after the cancel comes after it
            self._mark_cancelled(queue, message)

    # RPCs

    def send_rpc(
        self, key: str, payload: Payload, connection: Connection, timeout: Optional[float] = None
    ) -> asyncio.Future[Any]:
        """Send the RPC *payload* to the holder of *key*.

        :returns: the future of its reply.
        :raises UnroutableError: if nobody holds *key*."""
        message = self._rpc_message(key, payload, connection, timeout)
        self._broker.send_rpc(key, message)
        # Replies are posted to this loop, so none can arrive before the future is registered.
        return self._expect_rpc(key, message.correlation_id, message.deadline)

    def send_rpc_now(
        self, key: str, payload: Payload, connection: Connection, timeout: Optional[float] = None
    ) -> concurrent.futures.Future[Any]:
        """:meth:`send_rpc` from any thread (module doc, "Sending from another thread").

        :returns: the thread-world future of its reply.
        :raises UnroutableError: if nobody holds *key*."""
        message = self._rpc_message(key, payload, connection, timeout)
        return self._send_from_thread(
            connection,
            message.correlation_id,
            functools.partial(self._expect_rpc, key, message.correlation_id, message.deadline),
            functools.partial(self._broker.send_rpc, key, message),
        )

    def _rpc_message(
        self, key: str, payload: Payload, connection: Connection, timeout: Optional[float]
    ) -> Message:
        correlation_id = str(uuid.uuid4())
        payload = self._codec.traced(payload, "rpc", key, correlation_id)
        message = Message(payload, correlation_id, connection)
        message.deadline = _deadlines.absolute(timeout)
        return message

    def _expect_rpc(
        self, key: str, correlation_id: str, deadline: Optional[float]
    ) -> asyncio.Future[Any]:
        future = self._expect(correlation_id, _deadlines.remaining(deadline))
        future.add_done_callback(functools.partial(self._on_rpc_done, key, correlation_id))
        return future

    def send_rpcs(
        self, requests: list[tuple[str, Payload]], connection: Connection, timeout: Optional[float]
    ) -> list[asyncio.Future[Any]]:
        """Send the ``(key, payload)`` RPC *requests*, each even if another is unroutable.

        :returns: the futures of their replies.
        :raises BatchSendError: if some were unroutable (with the futures of the others)."""
        futures: list[Optional[asyncio.Future[Any]]] = []
        errors: dict[int, BaseException] = {}
        for index, (key, payload) in enumerate(requests):
            try:
                futures.append(self.send_rpc(key, payload, connection, timeout))
            except exceptions.UnroutableError as exc:
                futures.append(None)
                errors[index] = exc
        if errors:
            raise exceptions.BatchSendError(futures, errors) from errors[min(errors)]
        return [future for future in futures if future is not None]  # all of them

    def _on_rpc_done(self, key: str, correlation_id: str, future: asyncio.Future[Any]) -> None:
        """A caller that cancelled its RPC cancels the handler too (:mod:`kiwipy._cancels`)."""
        if not future.cancelled() or self._replies.pop(correlation_id) is None:
            return  # answered (the future was popped with its reply), or failed here
        cancel = Message(Payload(None, None), "", None, cancels=correlation_id)
        try:
            self._broker.send_rpc(key, cancel)
        except exceptions.KiwiError:  # the responder is gone, and its handler with it
            pass

    # Broadcasts

    def broadcast(self, payload: Payload) -> None:
        """Send the broadcast *payload* to every connection of the broker."""
        self._broker.broadcast(self._codec.traced(payload, "broadcast", BROADCASTS))

    # Replies to the requests this communicator handles

    def reply(self, message: Message, response: dict[str, Any]) -> bool:
        """Send *response* to the requester of *message*; an unencodable one is replaced by
        the encoding error. :returns: whether *response* itself could be sent."""
        if message.reply_to is None:
            return True
        name = self._codec.name
        encode = self._codec.encode
        payload, sent = encode_reply(encode, response, _replies.exception_response, name)
        final = _replies.PENDING_KEY not in response
        self._broker.send_reply(message.reply_to, message.correlation_id, payload, final)
        return sent

    async def reply_pending(self, message: Message) -> None:
        """Tell the requester of *message* that its outcome is a future still pending."""
        self.reply(message, _replies.pending_response())

    # Replies to the requests this communicator sent (posted to its loop by the broker)

    def on_reply(self, correlation_id: str, payload: Payload) -> None:
        """Resolve the future waiting for the reply *payload* (dropped if none is)."""
        if self._replies.get(correlation_id) is None:
            _LOGGER.debug("dropping reply for unknown or finished request %s", correlation_id)
            return
        try:
            reply = _replies.decode_reply(self._codec.decode(payload))
        except exceptions.DecodeError as exc:
            self._replies.fail(correlation_id, exc)
            return
        self._replies.resolve(correlation_id, reply)

    def fail_all(self, exc: BaseException) -> None:
        """Fail every future still waiting for a reply with *exc*."""
        self._replies.fail_all(exc)

    def _send_from_thread(
        self,
        connection: Connection,
        correlation_id: str,
        expect: Callable[[], asyncio.Future[Any]],
        send: Callable[[], None],
    ) -> concurrent.futures.Future[Any]:
        """``send()`` on this thread, its reply registered with ``expect()`` on the loop first
        (module doc). :returns: the thread-world future of the reply."""
        target: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._on_loop(connection, functools.partial(_follow, expect, target, connection))
        try:
            send()
        except BaseException:
            self._on_loop(connection, functools.partial(self._forget, correlation_id))
            raise
        if connection.closed:  # closing meanwhile: its loop may never run the registration
            _closed(target)
        return target

    @staticmethod
    def _on_loop(connection: Connection, callback: Callable[[], None]) -> None:
        """Run *callback* on *connection*'s loop, after everything posted there before."""
        try:
            connection.loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop is closed: so is the communicator
            raise exceptions.CommunicatorClosed from None

    def _expect(self, correlation_id: str, timeout: Optional[float] = None) -> asyncio.Future[Any]:
        future = self._replies.expect(correlation_id, None)
        _deadlines.arm(future, timeout, functools.partial(self._forget, correlation_id))
        return future

    def _forget(self, correlation_id: str) -> None:
        self._replies.forget(correlation_id)


def _follow(
    expect: Callable[[], asyncio.Future[Any]],
    target: concurrent.futures.Future[Any],
    connection: Connection,
) -> None:
    """Register a reply for a send from another thread, or fail it if the communicator closed
    first (its waiters were failed already)."""
    if connection.closed:
        _closed(target)
    else:
        follow(expect(), target)


def _closed(target: concurrent.futures.Future[Any]) -> None:
    try:
        target.set_exception(exceptions.CommunicatorClosed())
    except concurrent.futures.InvalidStateError:  # cancelled or failed already
        pass
