"""The RPC side of a communicator of the shared core (:mod:`kiwipy.core`): its RPC
subscribers, and the calls they handle.

Rules (the RabbitMQ transport follows the same ones):

* RPC identities are held by the broker, unique across all its connections.
* A request past its deadline is never started (its caller has ``DeadlineExceeded``
  already); a handler cut short by its deadline does not reply.
* A caller that cancels its future cancels the handler (:mod:`kiwipy._cancels`), which then
  does not reply.
* Closing lets the calls being handled answer for up to a second (:meth:`RpcServer.drain`),
  as on RabbitMQ; one cancelled by the close answers that its subscriber is gone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Optional, Protocol

import shortuuid

from .. import _cancels, _deadlines, _limits, _replies, _tracing, exceptions
from .._outcome import EXCEPTION, invoke
from ..communications import RpcSubscriber
from ._broker import Broker, Connection, Message
from ._codec import Codec
from ._jobs import Jobs
from ._sending import Sender

__all__ = ("RpcHost", "RpcServer")

# The logger of the communicator this server belongs to.
_LOGGER = logging.getLogger("kiwipy.core._communicator")

_DRAIN_GRACE = 1.0  # seconds RPC calls being handled get to answer on close (as on RabbitMQ)


class RpcHost(Protocol):
    """What the RPC server needs of the communicator that owns it (implemented by
    :class:`~kiwipy.core.AsyncBrokerCommunicator`, which subscribers are called with). A
    protocol, so that this module does not import the communicator's, which imports it."""

    _closed: bool


class RpcServer:
    """Serves the RPC subscribers of one communicator.

    :param host: the owning communicator.
    :param broker: its broker.
    :param codec: its encoding and tracing.
    :param sender: what sends its replies.
    :param jobs: the jobs the calls are handled in.
    """

    def __init__(
        self, host: RpcHost, broker: Broker, codec: Codec, sender: Sender, jobs: Jobs
    ) -> None:
        self._host = host
        self._broker = broker
        self._codec = codec
        self._sender = sender
        self._jobs = jobs
        self._subscribers: dict[str, RpcSubscriber] = {}
        self._answering: set[asyncio.Task[None]] = set()  # RPC calls being handled
        self._handlers = _cancels.RunningHandlers()  # the same, by correlation id

    def add(self, connection: Connection, subscriber: RpcSubscriber, identifier: Any) -> Any:
        """Hold *identifier* (a new one if ``None``) on the broker for *subscriber*.

        :returns: the identifier.
        :raises DuplicateSubscriberIdentifier: if any communicator holds the identifier.
        :raises InvalidName: if the identifier breaks the naming rules (``kiwipy._limits``).
        """
        identifier = shortuuid.uuid() if identifier is None else identifier
        key = _limits.rpc_identifier(identifier)
        self._broker.bind_rpc(connection, key, self.on_rpc)
        self._subscribers[key] = subscriber
        return identifier

    def remove(self, connection: Connection, identifier: Any) -> None:
        """Release *identifier*.

        :raises ValueError: if no subscriber here holds it."""
        if self._subscribers.pop(str(identifier), None) is None:
            raise ValueError(f"Unknown subscriber '{identifier}'")
        self._broker.unbind_rpc(connection, str(identifier))

    async def drain(self, current: Optional[asyncio.Task[Any]]) -> None:
        """Wait (up to a second) for the calls being handled, but *current*, to answer."""
        answering = [job for job in self._answering if job is not current]
        if answering:
            await asyncio.wait(answering, timeout=_DRAIN_GRACE)

    # Receiving (posted to the communicator's loop by the broker)

    def on_rpc(self, key: str, message: Message) -> None:
        """Handle the request or cancel *message* for the subscriber holding *key*."""
        subscriber = self._subscribers.get(key)
        if message.cancels is not None:
            self._handlers.cancel(message.cancels)
        elif self._host._closed or subscriber is None:
            gone = _replies.lost_response(f"the RPC subscriber '{key}' is gone")
            self._sender.reply(message, gone)
        elif _deadlines.expired(message.deadline):
            # its caller has DeadlineExceeded already: a request past it is never started
            _LOGGER.debug("dropping RPC %s to %r: past its deadline", message.correlation_id, key)
        else:
            serving = self._serve(subscriber, message)
            job = self._jobs.spawn(
                self._codec.handling(serving, "rpc", key, message.payload, message.correlation_id)
            )
            self._answering.add(job)
            job.add_done_callback(self._answering.discard)

    async def _serve(self, subscriber: RpcSubscriber, message: Message) -> None:
        reply = self._sender.reply
        try:
            try:
                msg = self._codec.decode(message.payload)
            except exceptions.DecodeError as exc:
                _tracing.failed(exc)
                reply(message, _replies.exception_response(exc))
                return
            pending = functools.partial(self._sender.reply_pending, message)
            invoking = invoke(subscriber, (self._host, msg), pending)
            with self._handlers.running(message.correlation_id):
                result = await _deadlines.bounded(message.deadline, invoking)
            if result.kind == EXCEPTION:
                _tracing.failed(result.value)
            if not _deadlines.cut_short(result):  # its caller has DeadlineExceeded already
                reply(message, _replies.outcome_response(result))
        except asyncio.CancelledError:
            if self._handlers.was_cancelled(message.correlation_id):
                return  # by its caller, who has its cancelled future: no reply
            if self._host._closed:
                closed = "the RPC subscriber was closed before it answered"
                reply(message, _replies.lost_response(closed))
            raise
