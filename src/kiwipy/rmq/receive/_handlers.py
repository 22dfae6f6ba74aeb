"""Handling RPC requests and broadcasts once they are received, and sending replies.

Invariants:

* Each delivery is handled by a task owned here, not by aiormq's channel (which cancels its
  consumer tasks when it closes): a connection that fails while a request is being handled
  does not cancel the subscriber, and its reply goes out once the connection is back.
* Nothing a subscriber does escapes (``BaseException`` included, :mod:`._outcome`): an RPC
  answers with an exception reply, a broadcast subscriber's error is logged and the others
  still run. An undecodable or oversized request is answered with the error; an undecodable
  broadcast is logged and dropped. Nothing is ever redelivered: requests and broadcasts are
  consumed without acknowledgement.
* Replies go out with :func:`kiwipy.rmq.receive._replies.send_reply`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Optional

import aiormq.abc

from ... import _broadcasts, _deadlines, exceptions
from ..._cancels import RunningHandlers
from ..._outcome import encode_reply
from .. import _traced, protocol
from ..connection import _amqp
from ..connection._session import Session
from . import _outcome
from ._replies import LARGE_BODY, decode_body, decode_now, send_reply

__all__ = ("MessageHandling",)

_LOGGER = logging.getLogger("kiwipy.rmq.messages")


class MessageHandling:
    """Runs the handlers of received RPC requests and broadcasts (module doc).

    :param session: the session to reply with.
    :param exchange: the message exchange (replies go back through it).
    :param owner: first argument of every subscriber call.
    """

    def __init__(self, session: Session, exchange: str, owner: Any) -> None:
        self._session = session
        self._exchange = exchange
        self._owner = owner
        self._content_type = session.encoder.content_type
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running = RunningHandlers()  # the RPC handlers, by correlation id

    def cancel(self, correlation_id: str) -> None:
        """Cancel the handler of the RPC *correlation_id*, if it runs (its caller cancelled
        it: :mod:`kiwipy._cancels`)."""
        self._running.cancel(correlation_id)

    def spawn(self, handling: Awaitable[Any]) -> asyncio.Future[Any]:
        """Handle a delivery in a task of our own (what consumer callbacks call).

        :returns: that task."""
        task = asyncio.ensure_future(handling)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, grace: float) -> None:
        """Wait up to *grace* seconds for the handlers under way, then cancel the rest."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)

    async def rpc(
        self, identifier: Any, subscriber: Optional[Any], message: aiormq.abc.DeliveredMessage
    ) -> None:
        """Run *subscriber* (``None``: it was removed meanwhile) on an RPC request, reply."""
        at = _deadlines.from_headers(message.header.properties.headers)
        if _deadlines.expired(at):
            # it waited past its deadline (in a prefetch buffer): its caller has
            # DeadlineExceeded already, and a request past it is never started
            _LOGGER.info("not starting an RPC for %r: past its deadline", identifier)
            return
        try:
            msg = await decode_body(self._session, message.body)
        except exceptions.KiwiError as exc:
            _LOGGER.error("undecodable RPC for %r: %s", identifier, exc)
            await self.reply(message, protocol.exception_response(exc))
            return
        if subscriber is None:
            gone = f"RPC subscriber '{identifier}' was removed"
            await self.reply(message, protocol.lost_response(gone))
            return

        async def pending() -> None:
            await self.reply(message, protocol.pending_response())

        correlation_id = message.header.properties.correlation_id
        try:
            invoking = _outcome.invoke(subscriber, (self._owner, msg), pending)
            with self._running.running(correlation_id):
                outcome = await _deadlines.bounded(at, invoking)
        except asyncio.CancelledError:
            if self._running.was_cancelled(correlation_id):
                return  # by its caller, who has its cancelled future: no reply
            # Only closing cancels a handler (drain): the caller learns it now, not from its
            # liveness check seconds later.
            closed = "the RPC subscriber was closed before it answered"
            await self.reply(message, protocol.lost_response(closed))
            raise
        _traced.outcome(outcome)  # issue 17
        if not _deadlines.cut_short(outcome):
            await self.reply(message, _outcome.to_response(outcome))

    async def broadcast(
        self, subscribers: Sequence[Any], message: aiormq.abc.DeliveredMessage
    ) -> None:
        """Call every broadcast subscriber with the decoded broadcast in *message*."""
        try:
            broadcast = protocol.decode_broadcast(await decode_body(self._session, message.body))
        except exceptions.KiwiError as exc:
            _LOGGER.error("dropping an undecodable broadcast: %s", exc)
            return
        args = (self._owner, broadcast.body, broadcast.sender, broadcast.subject)
        for subscriber in subscribers:
            outcome = await _outcome.invoke(
                subscriber, (*args, broadcast.correlation_id), futures=False
            )
            _traced.outcome(outcome)  # issue 17
            if outcome.kind == _outcome.EXCEPTION:
                _broadcasts.log_failure(_LOGGER, subscriber, outcome.value)

    def hand_over(
        self,
        subscribers: Sequence[Any],
        message: aiormq.abc.DeliveredMessage,
        tally: _broadcasts.Tally,
    ) -> bool:
        """Hand the broadcast in *message* to the subscribers' workers now, without a task
        (:func:`kiwipy._broadcasts.hand_over`), unless its body is decoded off the loop.

        :returns: whether it was handled (else :meth:`broadcast` is to handle it).
        """
        if len(message.body) > LARGE_BODY:
            return False
        try:
            broadcast = protocol.decode_broadcast(decode_now(self._session, message.body))
        except exceptions.KiwiError as exc:
            _LOGGER.error("dropping an undecodable broadcast: %s", exc)
            return True
        args = (broadcast.body, broadcast.sender, broadcast.subject, broadcast.correlation_id)
        _broadcasts.hand_over(subscribers, args, tally, _LOGGER)
        return True

    async def reply(self, message: aiormq.abc.DeliveredMessage, response: dict[str, Any]) -> None:
        """Send *response* to the requester of *message* (if it asked for one). A reply the
        broker refuses is replaced by an error reply, so the caller's future ends now rather
        than at its own timeout (issue 11 item 5)."""
        props = message.header.properties
        if not props.reply_to:
            return
        _LOGGER.debug(
            "Replying to RPC %s via %r: %r", props.correlation_id, props.reply_to, response
        )
        try:
            await self._send(message, self._encode(response))
        except exceptions.UnroutableError:
            _LOGGER.warning("the caller of RPC %s is gone; reply dropped", props.correlation_id)
        except exceptions.ConnectionLost as exc:
            # Nothing can be sent; the caller's liveness check sees this subscriber's queue
            # go with the connection and ends its future with ReplyLost.
            _LOGGER.error("reply to RPC %s not sent: %s", props.correlation_id, exc)
        except exceptions.KiwiError as exc:
            _LOGGER.warning(
                "reply to RPC %s refused (%s); sending the error", props.correlation_id, exc
            )
            lost = protocol.lost_response(f"the reply could not be sent: {exc}")
            try:
                await self._send(message, self._encode(lost))
            except exceptions.KiwiError as again:
                _LOGGER.error("no reply at all to RPC %s: %s", props.correlation_id, again)

    async def _send(self, message: aiormq.abc.DeliveredMessage, body: bytes) -> None:
        props = message.header.properties
        reply = _amqp.properties(
            correlation_id=props.correlation_id, content_type=self._content_type
        )
        await send_reply(self._session, self._exchange, props.reply_to or "", body, reply)

    def _encode(self, response: dict[str, Any]) -> bytes:
        """:returns: *response* encoded, or the error why it cannot be (a result the encoder
        cannot encode), so the requester always gets an answer (and one too large for
        ``max_message_size`` is replaced by :func:`~kiwipy.rmq.receive._replies.send_reply`)."""
        encoder = self._session.encoder
        body, _sent = encode_reply(
            encoder.encode, response, protocol.exception_response, encoder.name
        )
        return body
