"""The reply queue: where answers to RPCs and tasks come back, matched by correlation id.

Invariants:

* One reply queue per communicator, named ``<exchange>-reply-<uuid4>`` as in kiwipy 0.9, and
  bound with its own name as routing key to every exchange requests go out on (kiwipy 0.9
  responders reply through the exchange the request came in on).
* It is durable, not exclusive, with ``x-expires`` (``reply_queue_expires``): unlike kiwipy
  0.9's exclusive queue it survives a dropped connection (and a broker restart), so replies
  sent while the requester reconnects wait for it, and it is consumed again after the
  reconnection. It is deleted on a clean close and expires on its own otherwise.
* Its restorer is idempotent (it consumes only when not consuming) and finds out whether the
  queue outlived the outage: if it expired or was deleted meanwhile, replies sent in between
  are lost, so once it is declared again every task still waiting is sent again and every
  RPC still waiting ends with :class:`~kiwipy.ReplyLost`, as after a move (below).
* In a cluster the queue lives on one node, and while that node is down nobody can use or
  declare it (docs/cluster.md). After failing over to another node, the restorer then
  *moves*: a new queue (a new name) is declared, consumed, and bound with the routing keys of
  the old ones as well, so replies sent to an old name from now on arrive here; replies sent
  before that may be lost, so every task still waiting for its reply is sent again with the
  new queue as ``reply_to`` (the worker may run it twice: duplicates are allowed, a lost
  reply is not), and every RPC still waiting ends with :class:`~kiwipy.ReplyLost` (an RPC is
  not repeated). The old queue expires on its own (``reply_queue_expires``) once its node is
  back. Replies are acknowledged once handled, so one on its way when the
  connection drops comes again; copies (same ``message_id``) are dropped.
* Every waiting future is registered with its recipient before the request is published
  (the reply may beat the confirm) and removed when the publish fails. ``fail_all`` ends
  every waiting future (close, ``lost`` connection): a reply never hangs silently once it can
  no longer arrive. Replies awaited from an RPC subscriber are also watched by
  :class:`~kiwipy.rmq.receive._liveness.ResponderCheck`, which ends them with ``ReplyLost`` when that
  subscriber is gone. Replies for unknown ids (a second reply to a redelivered task, a reply
  after the caller gave up) are dropped.
* :func:`send_reply` (what responders use) publishes a reply the way kiwipy 0.9 does:
  through the exchange the request came in on, routing key ``reply_to``; if no queue is
  bound for it there, straight to the queue named ``reply_to`` through the default exchange.
  After a broker restart a requester's (durable) reply queue exists before the requester has
  bound it again to the (non-durable) exchanges. Only when both fail is the requester gone.
* A ``pending`` reply resolves the current future with a fresh one registered under the same
  correlation id (kiwipy 0.9's nesting); ``exception`` → :class:`~kiwipy.RemoteException`;
  ``cancelled`` → the future is cancelled. A reply that cannot be decoded fails its future
  with the :class:`~kiwipy.DecodeError` instead of leaving it waiting.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import uuid
from typing import Any, NamedTuple, Optional

import aiormq.abc
from aiormq import exceptions as amqp_errors
from pamqp import commands as spec

from ... import _deadlines, _replies, _tracing, exceptions
from .. import protocol
from ..connection import _amqp, _events
from ..connection._session import PROBE, Session
from ..send._fastpublish import Outgoing
from . import _acks
from ._liveness import ResponderCheck

__all__ = ("REPLIES", "ReplyQueue", "decode_body", "decode_now", "send_reply")

_LOGGER = logging.getLogger("kiwipy.rmq.messages")

REPLIES = "replies"
#: Bodies larger than this are decoded on a worker thread, so the loop keeps heartbeats going.
LARGE_BODY = 64 * 1024


async def decode_body(session: Session, body: bytes) -> Any:
    """:returns: *body* decoded with the session's encoder (off the loop when large).

    Large bodies are decoded one at a time: with the size checks, that bounds the memory
    decoding takes in the whole communicator to one ``max_decode_memory``.

    :raises MessageTooLarge: over the session's ``max_message_size``.
    :raises DecodeBudgetExceeded: if decoding it could take more than ``max_decode_memory``.
    :raises DecodeError: if it cannot be decoded.
    """
    if len(body) > LARGE_BODY:
        check_decode_size(session, len(body))
        async with session.decoding:
            return await session.loop.run_in_executor(None, session.encoder.decode, body)
    return decode_now(session, body)


def decode_now(session: Session, body: bytes) -> Any:
    """:returns: *body* decoded on this thread, with :func:`decode_body`'s checks (for bodies
    up to ``LARGE_BODY``)."""
    check_decode_size(session, len(body))
    return session.encoder.decode(body)


def check_decode_size(session: Session, size: int) -> None:
    """:raises MessageTooLarge: if a body of *size* bytes may not be decoded (over
    ``max_message_size``, or :class:`~kiwipy.DecodeBudgetExceeded` over
    ``max_decode_memory``)."""
    if size > session.max_message_size:
        raise exceptions.MessageTooLarge(size, session.max_message_size)
    budget, encoder = session.options["max_decode_memory"], session.encoder
    if budget is not None and size * encoder.decode_factor > budget:
        raise exceptions.DecodeBudgetExceeded(
            size, encoder=encoder.name, factor=encoder.decode_factor, budget=budget
        )


async def send_reply(
    session: Session, exchange: str, reply_to: str, body: bytes, properties: spec.Basic.Properties
) -> Any:
    """Publish a reply (module doc), confirmed, sent again after a connection failure. A
    reply over ``max_message_size`` is replaced by a :class:`~kiwipy.MessageTooLarge` error
    reply: the requester gets an answer, and the task is not redelivered for nothing.

    :returns: the broker's confirm.
    :raises UnroutableError: if the requester's reply queue does not exist.
    :raises ConnectionLost: if it could not be sent within ``recovery_timeout``.
    """
    if not properties.message_id:  # one id for every attempt: the requester drops copies
        properties.message_id = uuid.uuid4().hex
    if len(body) > session.max_message_size:
        too_large = exceptions.MessageTooLarge(len(body), session.max_message_size)
        _LOGGER.error("reply to %s not sent: %s", properties.correlation_id, too_large)
        body = session.encoder.encode(protocol.exception_response(too_large))
    try:
        return await session.publish(exchange, reply_to, body, properties, True)
    except exceptions.UnroutableError:
        if not exchange:
            raise
    _LOGGER.debug(
        "no binding for %r on %r; replying through the default exchange", reply_to, exchange
    )
    return await session.publish("", reply_to, body, properties, True)


class _Recent:
    """The message ids of the last replies handled: a copy of one (delivered again after a
    reconnection, or sent again by a responder unsure of its first attempt) is dropped, so a
    ``pending`` reply never adds a level twice."""

    _SIZE = 10000

    def __init__(self) -> None:
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def first_time(self, message_id: Optional[str]) -> bool:
        if not message_id:
            return True
        if message_id in self._ids:
            return False
        self._ids[message_id] = None
        if len(self._ids) > self._SIZE:
            self._ids.popitem(last=False)
        return True


class _Waiting(NamedTuple):
    """What the reply queue knows of a request waiting for its reply."""

    recipient: str  # routing key the request went to
    watch: Optional[str]  # the queue whose existence tells the responder is alive
    resend: Optional[Outgoing]  # a task: sent again if the reply queue has to move


#: How RabbitMQ says that a queue exists but its node is down (killed: "home node ... is
#: down or inaccessible") or stopping (a graceful stop: "process is stopped by supervisor").
_NODE_DOWN = ("down or inaccessible", "stopped by supervisor")


def _home_node_down(exc: BaseException) -> bool:
    """Whether *exc* (a channel error) says the queue's node is down, not that it is gone."""
    return any(text in str(exc) for text in _NODE_DOWN)


class ReplyQueue:
    """Receives replies for one communicator (or one stand-alone publisher).

    :param session: the session to use.
    :param prefix: the name prefix (kiwipy 0.9 uses the publisher's exchange name).
    """

    def __init__(self, session: Session, prefix: str) -> None:
        self._session = session
        self._prefix = prefix
        self.name = f"{prefix}-reply-{uuid.uuid4()}"
        self._aliases: list[str] = []  # the names of earlier queues (module doc: moving)
        self._resend_due: Optional[str] = None  # why waiting tasks must be sent again
        self._waiting: _replies.Waiters[_Waiting] = _replies.Waiters(session.loop.create_future)
        self._exchanges: dict[str, dict[str, Any]] = {}
        self._consumer_tag: Optional[str] = None
        self._started: Optional[asyncio.Future[None]] = None
        self._check = ResponderCheck(session, self._watched, self._fail_watching)
        self._handled = _Recent()
        _tracing.count_replies(self, _tracing.RABBITMQ, _waiting_count)
        self._resending: set[asyncio.Future[Any]] = set()

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
        if self._on_state not in self._session.events:
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
        for routing_key in (self.name, *self._aliases):
            await self._session.call(
                "binding the reply queue",
                "queue_bind",
                queue=self.name,
                exchange=exchange,
                routing_key=routing_key,
            )

    async def _consume(self) -> None:
        # Acknowledged once handled: a reply on its way when the connection drops is
        # delivered again on the next one, not lost with the socket.
        self._consumer_tag = await self._session.consume(REPLIES, self.name, self._on_reply)

    async def _restore(self) -> None:
        try:
            await self._session.call(
                "checking the reply queue", "queue_declare", purpose=PROBE, queue=self.name,
                passive=True,
            )  # fmt: skip
        except amqp_errors.ChannelNotFoundEntity as exc:
            if _home_node_down(exc):
                self._move(exc)
            else:
                self._queue_vanished()
        await self._declare()
        for exchange in self._exchanges:  # bindings to a non-durable exchange die with it
            await self._bind(exchange)
        if not self._session.is_consuming(REPLIES, self._consumer_tag):
            await self._consume()
        if self._resend_due is not None:
            why, self._resend_due = self._resend_due, None
            self._resend_waiting(why)

    def _move(self, why: BaseException) -> None:
        """Switch to a new queue name (module doc); the restorer then declares, binds and
        consumes it, and sends the waiting tasks again."""
        old, self.name = self.name, f"{self._prefix}-reply-{uuid.uuid4()}"
        self._aliases.append(old)
        self._consumer_tag = None
        self._resend_due = "the node of the reply queue went down while this RPC was waiting"
        _LOGGER.warning("reply queue %s unusable (%s); replies now come to %s", old, why, self.name)

    def _resend_waiting(self, why: str) -> None:
        """Send every waiting task again (it may run twice: duplicates are allowed, a lost
        reply is not) and end every waiting RPC with ``ReplyLost`` (not repeated)."""
        lost = exceptions.ReplyLost(f"{why}; its reply may be lost (RPCs are not repeated)")
        for correlation_id, (_, each) in self._waiting.items():
            if each.resend is None:
                self._waiting.fail(correlation_id, lost)
            else:
                task = asyncio.ensure_future(self._resend(correlation_id, each.resend))
                self._resending.add(task)
                task.add_done_callback(self._resending.discard)

    async def _resend(self, correlation_id: str, message: Outgoing) -> None:
        props = message.properties
        props = _amqp.properties(
            persistent=True,
            correlation_id=props.correlation_id,
            reply_to=self.name,
            content_type=props.content_type,
            headers=props.headers,
        )
        try:
            await self._session.publish(message.exchange, message.routing_key, message.body,
                                        props, message.mandatory)  # fmt: skip
        except exceptions.KiwiError as exc:
            self._waiting.fail(correlation_id, exc)

    def _queue_vanished(self) -> None:
        """It expired or was deleted while disconnected: replies sent meanwhile are lost,
        so once it is declared again the waiting tasks are sent again, as after a move."""
        if self._waiting:
            self._resend_due = (
                f"the reply queue {self.name} expired or was deleted while disconnected"
            )

    def _on_state(self, event: str) -> None:
        if event == _events.LOST:
            self.fail_all(_amqp.ConnectionGone("the connection was lost; no reply can arrive"))

    # Waiting futures

    def expect(
        self,
        correlation_id: str,
        recipient: str,
        watch: Optional[str] = None,
        resend: Optional[Outgoing] = None,
    ) -> asyncio.Future[Any]:
        """:returns: a future for the reply to *correlation_id* (sent to *recipient*).

        :param watch: the queue of the RPC subscriber the reply is awaited from: the reply
            ends with :class:`~kiwipy.ReplyLost` once that queue is gone (module doc).
        :param resend: the task message, sent again if the reply queue has to move to
            another node (module doc); without it, a move ends the wait with ``ReplyLost``.
        """
        future = self._waiting.expect(correlation_id, _Waiting(recipient, watch, resend))
        if watch is not None:
            self._check.watch(watch)
        return future

    def _watched(self) -> set[str]:
        return {each.watch for _, (_, each) in self._waiting.items() if each.watch is not None}

    def _fail_watching(self, queue: str, exc: BaseException) -> None:
        self._waiting.fail_all(exc, where=lambda each: each.watch == queue)

    def deadline(
        self, correlation_id: str, future: asyncio.Future[Any], timeout: Optional[float]
    ) -> None:
        """Fail *future* (the reply to *correlation_id*) with
        :class:`~kiwipy.DeadlineExceeded` after *timeout* seconds, then stop waiting for
        its reply (``None``: no deadline)."""
        _deadlines.arm(future, timeout, functools.partial(self.forget, correlation_id))

    def forget(self, correlation_id: str) -> None:
        """Stop waiting for *correlation_id* (its request was not sent)."""
        self._waiting.forget(correlation_id)

    def fail_all(self, exc: BaseException) -> None:
        """End every waiting future with *exc*."""
        self._waiting.fail_all(exc)

    @property
    def waiting(self) -> int:
        """How many replies are awaited."""
        return len(self._waiting)

    async def _on_reply(self, message: aiormq.abc.DeliveredMessage) -> None:
        props = message.header.properties
        if self._handled.first_time(props.message_id):
            await self._handle(props.correlation_id or "", message)
        else:
            _LOGGER.debug("dropping a second copy of reply %s", props.message_id)
        if message.delivery_tag is not None and not message.channel.is_closed:
            # not awaited: a reply not acknowledged in the end only comes again (and is dropped)
            _acks.ack(message.channel, message.delivery_tag).add_done_callback(_retrieve)

    async def _handle(self, correlation_id: str, message: aiormq.abc.DeliveredMessage) -> None:
        if self._waiting.get(correlation_id) is None:
            _LOGGER.debug("dropping a reply for an unknown id %r", correlation_id)
            return
        try:
            reply = _replies.decode_reply(await decode_body(self._session, message.body))
        except exceptions.KiwiError as exc:
            _LOGGER.error("undecodable reply to %r: %s", correlation_id, exc)
            reply = _replies.Reply("exception", exc)
        self._waiting.resolve(correlation_id, reply)

    async def close(self) -> None:
        """Stop consuming and delete the queue (best effort: it expires anyway)."""
        self._session.remove_restorer(REPLIES, self)
        for task in list(self._resending):
            task.cancel()
        await self._check.stop()
        if self._consumer_tag is not None:
            await self._session.cancel(REPLIES, self._consumer_tag)
        if self._started is not None and self._started.done():
            try:
                await self._session.call(
                    "deleting the reply queue", "queue_delete", queue=self.name
                )
            except (exceptions.KiwiError, amqp_errors.ChannelClosed) as exc:
                _LOGGER.debug("reply queue %s not deleted: %s", self.name, exc)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an ack lost with its channel: the reply comes again


def _waiting_count(replies: ReplyQueue) -> int:
    return len(replies._waiting)
