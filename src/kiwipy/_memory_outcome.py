"""Subscriber outcomes and replies for the in-process transport.

Replies have the shapes of kiwipy 0.9's RabbitMQ replies (``{'result': v}``,
``{'exception': text}`` plus this library's ``exception_type``/``traceback``,
``{'pending': None}``, ``{'cancelled': text}``) and one more, ``{'lost': text}``, for a reply
that can never come. They go through the communicator's encoder like every other message.

A subscriber's outcome is final once it is neither an awaitable to await nor a future to
follow: each returned future is one level of nesting and is announced with one ``pending``
reply, so the requester receives a future per level, as with kiwipy 0.9.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Mapping
from typing import Any, Callable

from . import exceptions
from ._portal import to_asyncio
from .communications import _remote_exception

__all__ = (
    "PENDING",
    "call_subscriber",
    "exception_reply",
    "final_reply",
    "is_future",
    "lost_reply",
    "own_cancellation",
    "settle_reply",
)

PENDING: dict[str, Any] = {"pending": None}


def exception_reply(exc: BaseException) -> dict[str, Any]:
    """:returns: the reply reporting *exc* (any ``BaseException``) to the requester."""
    remote = _remote_exception(exc)
    return {
        "exception": str(exc),
        "exception_type": remote.remote_type,
        "traceback": remote.remote_traceback,
    }


def lost_reply(reason: str) -> dict[str, Any]:
    """:returns: the reply telling the requester no answer will come (``ReplyLost``)."""
    return {"lost": reason}


def is_future(value: Any) -> bool:
    """:returns: whether *value* is a future of either world (one level of nesting)."""
    return asyncio.isfuture(value) or isinstance(value, concurrent.futures.Future)


async def call_subscriber(subscriber: Any, *args: Any) -> Any:
    """:returns: what ``subscriber(*args)`` returns, awaiting awaitables that are not futures
    (so ``async def __call__`` objects work too, unlike kiwipy 0.9's bug B11)."""
    result = subscriber(*args)
    while inspect.isawaitable(result) and not is_future(result):
        result = await result
    return result


def own_cancellation(exc: BaseException, closing: Callable[[], bool]) -> bool:
    """:returns: whether *exc* cancels the current task itself, rather than being an
    ``asyncio.CancelledError`` that user code raised (which is just an outcome).

    :param closing: gives the answer where ``Task.cancelling`` is missing (Python < 3.11):
        whether the communicator is closing, the only time it cancels its own tasks.
    """
    if not isinstance(exc, asyncio.CancelledError):
        return False
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return bool(cancelling()) if cancelling is not None else closing()


async def final_reply(
    value: Any,
    loop: asyncio.AbstractEventLoop,
    on_pending: Callable[[], None],
    closing: Callable[[], bool],
) -> dict[str, Any]:
    """Follow *value* through its future levels, calling ``on_pending()`` for each.

    :returns: the final reply: the result, the exception, or ``cancelled`` when a level was
        cancelled.
    :raises asyncio.CancelledError: if the current task is cancelled meanwhile.
    """
    while is_future(value):
        on_pending()
        level = value
        try:
            if isinstance(level, concurrent.futures.Future):
                value = await to_asyncio(level, loop)
            else:  # shielded: cancelling this task must not cancel the subscriber's future
                value = await asyncio.shield(level)
        except BaseException as exc:
            if own_cancellation(exc, closing):
                raise
            if level.cancelled():
                return {"cancelled": None}
            return exception_reply(exc)
    return {"result": value}


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
