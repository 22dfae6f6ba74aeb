"""Replies, the same on every transport: their shapes, and the table of futures waiting
for them.

A reply body is one of kiwipy 0.9's ``{'result': v}``, ``{'exception': text}``,
``{'pending': None}``, ``{'cancelled': text}`` (task replies over RabbitMQ also carry
``'host'``). This library adds keys kiwipy 0.9 ignores: ``'exception_type'`` and
``'traceback'`` next to ``'exception'``, and ``'lost'`` for a reply telling the requester
that no answer will come (:class:`~kiwipy.ReplyLost` here; kiwipy 0.9 reads its
``'exception'``).

:class:`Waiters` is the correlation table of a requester: one future per request, a
``pending`` reply resolving it with a fresh future registered under the same correlation id
(kiwipy 0.9's nesting), and every future ended at once when no reply can come any more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import traceback
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Generic, Optional, TypeVar

from . import exceptions
from ._outcome import CANCELLED, RESULT, Outcome
from ._raised import exception_text

__all__ = (
    "CANCELLED_KEY",
    "EXCEPTION_KEY",
    "EXCEPTION_TYPE_KEY",
    "LOST_KEY",
    "PENDING_KEY",
    "RESULT_KEY",
    "TRACEBACK_KEY",
    "MalformedMessage",
    "Reply",
    "Waiters",
    "cancelled_response",
    "decode_reply",
    "exception_response",
    "lost_response",
    "outcome_response",
    "pending_response",
    "result_response",
)

T = TypeVar("T")

RESULT_KEY = "result"
EXCEPTION_KEY = "exception"
CANCELLED_KEY = "cancelled"
PENDING_KEY = "pending"
LOST_KEY = "lost"
EXCEPTION_TYPE_KEY = "exception_type"
TRACEBACK_KEY = "traceback"


class MalformedMessage(exceptions.DecodeError):
    """A message decoded fine but does not have the shape its kind requires."""

    def __init__(self, message: str) -> None:
        super().__init__(message, encoder="kiwipy-protocol")


def result_response(result: Any) -> dict[str, Any]:
    return {RESULT_KEY: result}


def exception_response(exception: BaseException, trace: Any = None) -> dict[str, Any]:
    """:returns: the reply for *exception*: its text (kiwipy 0.9's key) plus its type and
    traceback (keys kiwipy 0.9 ignores)."""
    message = exception_text(exception)
    if trace is not None:
        message += "\n" + "".join(traceback.format_tb(trace))
    exc_type = type(exception)
    return {
        EXCEPTION_KEY: message,
        EXCEPTION_TYPE_KEY: f"{exc_type.__module__}.{exc_type.__qualname__}",
        TRACEBACK_KEY: "".join(
            traceback.format_exception(exc_type, exception, exception.__traceback__)
        ),
    }


def lost_response(reason: str) -> dict[str, Any]:
    """:returns: the reply telling the requester that no answer will come (module doc)."""
    response = exception_response(exceptions.ReplyLost(reason))
    response[LOST_KEY] = reason
    return response


def cancelled_response(msg: Optional[str] = None) -> dict[str, Any]:
    return {CANCELLED_KEY: msg}


def pending_response(msg: Optional[str] = None) -> dict[str, Any]:
    return {PENDING_KEY: msg}


@dataclasses.dataclass(frozen=True)
class Reply:
    """A decoded reply. ``kind`` is ``'cancelled'``, ``'exception'``, ``'result'`` or
    ``'pending'``; ``value`` is the result, or the :class:`~kiwipy.RemoteException`."""

    kind: str
    value: Any = None


def decode_reply(response: Any) -> Reply:
    """Classify a decoded reply body, checking keys in kiwipy 0.9's order (cancelled,
    exception, result, pending; this library's ``lost`` before ``exception``).

    :raises MalformedMessage: if it is not a mapping or has none of the keys.
    """
    if not isinstance(response, Mapping):
        raise MalformedMessage(f"a reply is a mapping, got {_describe(response)}")
    if CANCELLED_KEY in response:
        return Reply("cancelled", response[CANCELLED_KEY])
    if LOST_KEY in response:
        return Reply("exception", exceptions.ReplyLost(response[LOST_KEY]))
    if EXCEPTION_KEY in response:
        remote = exceptions.RemoteException(
            response[EXCEPTION_KEY],
            remote_type=response.get(EXCEPTION_TYPE_KEY),
            remote_traceback=response.get(TRACEBACK_KEY),
        )
        return Reply("exception", remote)
    if RESULT_KEY in response:
        return Reply("result", response[RESULT_KEY])
    if PENDING_KEY in response:
        return Reply("pending", response[PENDING_KEY])
    raise MalformedMessage(f"a reply has one of result/exception/pending/cancelled: {response!r}")


def _describe(obj: Any) -> str:
    text = repr(obj)
    return f"{type(obj).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def outcome_response(outcome: Outcome) -> dict[str, Any]:
    """:returns: the reply body for a subscriber's final *outcome*."""
    if outcome.kind == RESULT:
        return result_response(outcome.value)
    if outcome.kind == CANCELLED:
        return cancelled_response(str(outcome.value))
    return exception_response(outcome.value)


class Waiters(Generic[T]):
    """The futures of a requester waiting for replies, by correlation id, each with a value
    of the transport's own (*T*: what it needs to know about the request).

    :param new_future: makes a future on the requester's loop.
    """

    def __init__(self, new_future: Callable[[], asyncio.Future[Any]]) -> None:
        self._new_future = new_future
        self._waiting: dict[str, tuple[asyncio.Future[Any], T]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, correlation_id: str, extra: T) -> asyncio.Future[Any]:
        """:returns: a new future for the reply to *correlation_id* (registered before the
        request goes out: the reply may come before the send returns)."""
        future = self._new_future()
        self._waiting[correlation_id] = (future, extra)
        return future

    def get(self, correlation_id: str) -> Optional[tuple[asyncio.Future[Any], T]]:
        return self._waiting.get(correlation_id)

    def pop(self, correlation_id: str) -> Optional[tuple[asyncio.Future[Any], T]]:
        return self._waiting.pop(correlation_id, None)

    def forget(self, correlation_id: str) -> None:
        """Stop waiting for *correlation_id* (not sent, or its caller gave up)."""
        self._waiting.pop(correlation_id, None)

    def items(self) -> Iterator[tuple[str, tuple[asyncio.Future[Any], T]]]:
        return iter(list(self._waiting.items()))

    def resolve(self, correlation_id: str, reply: Reply) -> bool:
        """Settle the future waiting for *correlation_id* with *reply*; a ``pending`` reply
        resolves it with a fresh future, waiting under the same id for the next reply.

        :returns: whether a future was waiting for it.
        """
        waiting = self._waiting.pop(correlation_id, None)
        if waiting is None:
            return False
        future, extra = waiting
        if future.done():
            return True  # its caller cancelled it; later levels have nobody to go to
        if reply.kind == "pending":
            future.set_result(self.expect(correlation_id, extra))
        elif reply.kind == "result":
            future.set_result(reply.value)
        elif reply.kind == "exception":
            future.set_exception(reply.value)
        else:
            future.cancel()
        return True

    def fail(self, correlation_id: str, exc: BaseException) -> None:
        """End the future waiting for *correlation_id* with *exc*."""
        waiting = self._waiting.pop(correlation_id, None)
        if waiting is not None:
            fail(waiting[0], exc)

    def fail_all(self, exc: BaseException, where: Optional[Callable[[T], bool]] = None) -> None:
        """End every waiting future (those whose value *where* accepts) with *exc*."""
        for correlation_id, (future, extra) in self.items():
            if where is None or where(extra):
                del self._waiting[correlation_id]
                fail(future, exc)


def fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail *future* unless it is done, marking its exception retrieved: a caller who dropped
    the future needs no warning at exit."""
    if not future.done():
        future.set_exception(exc)
        future.exception()
