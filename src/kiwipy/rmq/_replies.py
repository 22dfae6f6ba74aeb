"""The reply queue: where answers to RPCs and tasks come back, matched by correlation id.

Invariants:

* One reply queue per communicator, named ``<exchange>-reply-<uuid4>`` as in kiwipy 0.9, and
  bound with its own name as routing key to every exchange requests go out on (kiwipy 0.9
  responders reply through the exchange the request came in on).
* It is durable, not exclusive, with ``x-expires`` (``reply_queue_expires``): unlike kiwipy
  0.9's exclusive queue it survives a dropped connection, so replies sent while the requester
  reconnects wait for it, and it is consumed again after the reconnection. It is deleted on a
  clean close and expires on its own otherwise.
* Every waiting future is registered with its recipient before the request is published
  (the reply may beat the confirm) and removed when the publish fails. ``fail_all`` ends
  every waiting future (close, lost connection): a reply never hangs silently once it can no
  longer arrive. Replies for unknown ids (a second reply to a redelivered task, a reply after
  the caller gave up) are dropped.
* A ``pending`` reply resolves the current future with a fresh one registered under the same
  correlation id (kiwipy 0.9's nesting); ``exception`` → :class:`~kiwipy.RemoteException`;
  ``cancelled`` → the future is cancelled. A reply that cannot be decoded fails its future
  with the :class:`~kiwipy.DecodeError` instead of leaving it waiting.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, NamedTuple, Optional

import aiormq.abc
from aiormq import exceptions as amqp_errors

from .. import exceptions
from . import _amqp, protocol
from ._session import Session

__all__ = ("REPLIES", "ReplyQueue", "decode_body")

_LOGGER = logging.getLogger("kiwipy.rmq.messages")

REPLIES = "replies"
#: Bodies larger than this are decoded on a worker thread, so the loop keeps heartbeats going.
LARGE_BODY = 64 * 1024


async def decode_body(session: Session, body: bytes) -> Any:
    """:returns: *body* decoded with the session's encoder (off the loop when large).

    :raises MessageTooLarge: over the session's ``max_message_size``.
    :raises DecodeError: if it cannot be decoded.
    """
    if len(body) > session.max_message_size:
        raise exceptions.MessageTooLarge(len(body), session.max_message_size)
    if len(body) > LARGE_BODY:
        return await session.loop.run_in_executor(None, session.encoder.decode, body)
    return session.encoder.decode(body)


class _Waiting(NamedTuple):
    future: asyncio.Future[Any]
    recipient: str  # routing key the request went to (issue 4: liveness checks per recipient)


class ReplyQueue:
    """Receives replies for one communicator (or one stand-alone publisher).

    :param session: the session to use.
    :param prefix: the name prefix (kiwipy 0.9 uses the publisher's exchange name).
    """

    def __init__(self, session: Session, prefix: str) -> None:
        self._session = session
        self.name = f"{prefix}-reply-{uuid.uuid4()}"
        self._waiting: dict[str, _Waiting] = {}
        self._exchanges: dict[str, dict[str, Any]] = {}
        self._consumer_tag: Optional[str] = None
        self._started: Optional[asyncio.Future[None]] = None

    async def bind(self, exchange: str, exchange_params: dict[str, Any]) -> None:
        """Receive replies published on *exchange* (declaring and consuming the queue on
        first use); *exchange_params* let it be declared again after a reconnection."""
        started = self._started
        if started is None or (started.done() and (started.cancelled() or started.exception())):
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)  # type: ignore[arg-type]
        if exchange not in self._exchanges:
            self._exchanges[exchange] = exchange_params
            await self._bind(exchange)

    async def _start(self) -> None:
        await self._declare()
        self._session.add_restorer(REPLIES, self, self._restore)
        if self._on_state not in self._session.listeners:
            self._session.add_listener(self._on_state)
        await self._consume()

    async def _declare(self) -> None:
        arguments = {"x-expires": self._session.options["reply_queue_expires"]}
        await self._session.call(
            "declaring the reply queue",
            "queue_declare",
            queue=self.name,
            durable=True,
            arguments=arguments,
        )

    async def _bind(self, exchange: str) -> None:
        # Declared again first (it may have auto-deleted in testing mode): see messages.py.
        await self._session.declare_exchange(exchange, self._exchanges[exchange])
        await self._session.call(
            "binding the reply queue",
            "queue_bind",
            queue=self.name,
            exchange=exchange,
            routing_key=self.name,
        )

    async def _consume(self) -> None:
        self._consumer_tag = await self._session.consume(
            REPLIES, self.name, self._on_reply, no_ack=True
        )

    async def _restore(self) -> None:
        await self._declare()  # recreated if it expired during a long outage
        for exchange in self._exchanges:
            await self._bind(exchange)
        await self._consume()

    def _on_state(self, event: str) -> None:
        if event == "lost":
            self.fail_all(_amqp.ConnectionGone("the connection was lost; no reply can arrive"))

    # Waiting futures

    def expect(self, correlation_id: str, recipient: str) -> asyncio.Future[Any]:
        """:returns: a future for the reply to *correlation_id* (sent to *recipient*)."""
        future: asyncio.Future[Any] = self._session.loop.create_future()
        self._waiting[correlation_id] = _Waiting(future, recipient)
        return future

    def forget(self, correlation_id: str) -> None:
        """Stop waiting for *correlation_id* (its request was not sent)."""
        self._waiting.pop(correlation_id, None)

    def fail_all(self, exc: BaseException) -> None:
        """End every waiting future with *exc*."""
        waiting, self._waiting = self._waiting, {}
        for each in waiting.values():
            if not each.future.done():
                each.future.set_exception(exc)
                # Mark it retrieved: a caller who dropped the future needs no warning at exit.
                each.future.exception()

    @property
    def waiting(self) -> int:
        """How many replies are awaited."""
        return len(self._waiting)

    async def _on_reply(self, message: aiormq.abc.DeliveredMessage) -> None:
        correlation_id = message.header.properties.correlation_id or ""
        waiting = self._waiting.pop(correlation_id, None)
        if waiting is None:
            _LOGGER.debug("dropping a reply for an unknown id %r", correlation_id)
            return
        try:
            reply = protocol.decode_reply(await decode_body(self._session, message.body))
        except exceptions.KiwiError as exc:
            _LOGGER.error("undecodable reply to %r: %s", correlation_id, exc)
            reply = protocol.Reply("exception", exc)
        self._resolve(correlation_id, waiting, reply)

    def _resolve(self, correlation_id: str, waiting: _Waiting, reply: protocol.Reply) -> None:
        future = waiting.future
        if future.done():
            return  # the caller cancelled it; later levels have nobody to go to
        if reply.kind == "pending":
            inner = self._session.loop.create_future()
            self._waiting[correlation_id] = _Waiting(inner, waiting.recipient)
            future.set_result(inner)
        elif reply.kind == "result":
            future.set_result(reply.value)
        elif reply.kind == "exception":
            future.set_exception(reply.value)
        else:
            future.cancel()

    async def close(self) -> None:
        """Stop consuming and delete the queue (best effort: it expires anyway)."""
        self._session.remove_restorer(REPLIES, self)
        if self._consumer_tag is not None:
            await self._session.cancel(REPLIES, self._consumer_tag)
        if self._started is not None and self._started.done():
            try:
                await self._session.call(
                    "deleting the reply queue", "queue_delete", queue=self.name
                )
            except (exceptions.KiwiError, amqp_errors.ChannelClosed) as exc:
                _LOGGER.debug("reply queue %s not deleted: %s", self.name, exc)
