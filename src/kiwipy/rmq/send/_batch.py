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

This module encodes each batch's messages and reports the outcome; publishing them in
windows and checking the confirms is :mod:`kiwipy.rmq.send._windows`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

from ... import _broadcasts, exceptions
from .. import protocol
from ..connection._session import Session
from ..receive._replies import ReplyQueue
from . import _outgoing
from ._outgoing import MessageTarget, TaskTarget
from ._windows import IN_FLIGHT, WINDOW, Pending, Sender, run_within

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

#: Messages encoded between two yields to the event loop.
_ENCODE_SLICE = 200


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
    sender = Sender(session, replies, pending, per_call)
    if timeout is None:
        await sender.run()
    else:
        await run_within(sender, timeout)
    futures, errors = sender.futures, sender.errors
    if errors:
        raise exceptions.BatchSendError(list(futures), errors) from errors[min(errors)]
    return futures
