"""Subscriber outcomes as replies of the embedded transports (memory, SQLite).

Replies have the shapes of kiwipy 0.9's RabbitMQ replies (``{'result': v}``,
``{'exception': text}`` plus this library's ``exception_type``/``traceback``,
``{'pending': None}``, ``{'cancelled': text}``) and one more, ``{'lost': text}``, for a reply
that can never come. They go through the communicator's encoder like every other message.
What a subscriber's call ends with is decided once for every transport
(:mod:`kiwipy._outcome`); this module only shapes it as a reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Callable

from .. import exceptions
from .._outcome import CANCELLED, RESULT, Outcome
from ..communications import _remote_exception

__all__ = (
    "PENDING",
    "exception_reply",
    "lost_reply",
    "outcome_reply",
    "settle_reply",
)

PENDING: dict[str, Any] = {"pending": None}


def exception_reply(exc: BaseException) -> dict[str, Any]:
    """:returns: the reply reporting *exc* (any ``BaseException``) to the requester."""
    remote = _remote_exception(exc)
    return {
        "exception": remote.args[0],
        "exception_type": remote.remote_type,
        "traceback": remote.remote_traceback,
    }


def outcome_reply(outcome: Outcome) -> dict[str, Any]:
    """:returns: the reply for a subscriber's final *outcome*."""
    if outcome.kind == RESULT:
        return {"result": outcome.value}
    if outcome.kind == CANCELLED:
        return {"cancelled": str(outcome.value)}
    return exception_reply(outcome.value)


def lost_reply(reason: str) -> dict[str, Any]:
    """:returns: the reply telling the requester no answer will come (``ReplyLost``)."""
    return {"lost": reason}


def settle_reply(
    future: asyncio.Future[Any], reply: Any, next_level: Callable[[], asyncio.Future[Any]]
) -> None:
    """Resolve the requester's *future* with *reply*; a ``pending`` reply resolves it with
    ``next_level()``, the future the next reply will resolve."""
    if not isinstance(reply, Mapping):
        future.set_exception(exceptions.DecodeError(f"bad reply {reply!r}", encoder="memory"))
    elif "cancelled" in reply:
        future.cancel()
    elif "exception" in reply:
        remote = exceptions.RemoteException(
            reply["exception"],
            remote_type=reply.get("exception_type"),
            remote_traceback=reply.get("traceback"),
        )
        future.set_exception(remote)
    elif "lost" in reply:
        future.set_exception(exceptions.ReplyLost(reply["lost"]))
    elif "result" in reply:
        future.set_result(reply["result"])
    else:
        future.set_result(next_level())
