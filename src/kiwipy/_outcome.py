"""Running a subscriber to its final outcome, whatever it returns (every transport).

A subscriber may be a function, a coroutine function or an object whose ``__call__`` is
either (kiwipy 0.9 never awaited the latter: bug B11). Its return value is awaited while it
is an awaitable that is not a future; each *future* it returns (asyncio or
``concurrent.futures``) is one level of nesting: ``on_pending`` is awaited (to send kiwipy
0.9's ``pending`` reply) and the future's own outcome is followed, level by level.

Cancellation is told apart by *who* was cancelled (bug B4): a future the subscriber returned
that ends cancelled, or a subscriber raising ``kiwipy.CancelledError``
(``concurrent.futures.CancelledError``, kiwipy 0.9's way to cancel), gives a ``cancelled``
outcome; the handler's own task being cancelled (the communicator closing) propagates. Every
other ``BaseException`` from user code (``asyncio.CancelledError``, ``SystemExit``,
``KeyboardInterrupt``, ``StopIteration``, ``GeneratorExit``) becomes an ``exception`` outcome:
it never kills a consumer or the loop, and the sender always gets an answer.

Each transport turns an :class:`Outcome` into its reply (``kiwipy.rmq.receive._outcome.to_response``,
``kiwipy.memory._outcome.outcome_reply``); the decisions are taken here, once, including
the error reply that replaces a reply that cannot be encoded (:func:`encode_reply`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import sys
from collections.abc import Awaitable, Sequence
from typing import Any, Callable, NamedTuple, Optional, TypeVar

from . import exceptions
from ._dispatch import OFFLOADED
from ._raised import exception_text, original

__all__ = (
    "CANCELLED",
    "EXCEPTION",
    "REJECTED",
    "RESULT",
    "DeferredClose",
    "Outcome",
    "encode_reply",
    "from_exception",
    "in_subscriber_call",
    "invoke",
    "outcome_of",
)

_LOGGER = logging.getLogger(__name__)

RESULT = "result"
EXCEPTION = "exception"
CANCELLED = "cancelled"
REJECTED = "rejected"


class Outcome(NamedTuple):
    """How a subscriber call ended: ``kind`` is one of the module constants; ``value`` is the
    result, the exception, or the cancellation message."""

    kind: str
    value: Any = None


async def invoke(
    subscriber: Callable[..., Any],
    args: Sequence[Any],
    on_pending: Optional[Callable[[], Awaitable[Any]]] = None,
    *,
    futures: bool = True,
) -> Outcome:
    """Call ``subscriber(*args)`` and follow its return value to a final :class:`Outcome`.
    While it runs, :func:`in_subscriber_call` is true (in the tasks it starts too).

    :param on_pending: awaited once per level of returned future.
    :param futures: whether a returned future is waited for. A broadcast subscriber's is
        not (its outcome goes nowhere, and kiwipy 0.9 ignored it): plumpy's subscribers
        return a future that resolves on plumpy's own loop, which may be the very thread
        waiting in ``broadcast_send`` for this communicator's subscribers to be called.
    """
    token = _HANDLER.set(asyncio.current_task())
    try:
        return await _follow(subscriber, args, on_pending, futures)
    finally:
        _HANDLER.reset(token)


#: The task handling a subscriber call, in the context of the call (and of the tasks the
#: subscriber starts), so a communicator closed by its own subscriber can tell.
_HANDLER: contextvars.ContextVar[Optional[asyncio.Task[Any]]] = contextvars.ContextVar(
    "kiwipy_subscriber_handler", default=None
)


def in_subscriber_call() -> bool:
    """:returns: whether the running code was called, directly or through a task it started,
    by a subscriber whose call is still being handled: a communicator closed from there must
    let that call be answered first (issue 11 item 6a)."""
    handler = _HANDLER.get()
    return handler is not None and not handler.done()


class DeferredClose:
    """A communicator's close, run in the background when one of its own subscribers asks
    for it: the close waits for the calls being handled, so waiting for it there would hold
    back (or lose) that call's reply (issue 11 item 6a)."""

    def __init__(self) -> None:
        self._closing: Optional[asyncio.Future[Any]] = None

    def start(self, close: Callable[[], Awaitable[Any]]) -> bool:
        """Run ``close()`` in the background if called from a subscriber's call.

        :returns: whether it did (otherwise the caller runs the close itself).
        """
        if not in_subscriber_call():
            return False
        self._closing = asyncio.ensure_future(close())
        self._closing.add_done_callback(_log_close_failure)
        return True

    async def wait(self) -> None:
        """Wait for a close started in the background (except from a subscriber's call)."""
        if self._closing is not None and not in_subscriber_call():
            await asyncio.shield(self._closing)


def _log_close_failure(closing: asyncio.Future[Any]) -> None:
    if not closing.cancelled() and closing.exception() is not None:
        _LOGGER.warning("closing the communicator failed: %r", closing.exception())


async def _follow(
    subscriber: Callable[..., Any],
    args: Sequence[Any],
    on_pending: Optional[Callable[[], Awaitable[Any]]],
    futures: bool = True,
) -> Outcome:
    try:
        value = subscriber(*args)
    except BaseException as exc:
        return from_exception(exc)
    direct = _DIRECT and getattr(subscriber, OFFLOADED, False)
    while True:
        if inspect.isawaitable(value) and not _is_future(value):
            if direct:  # issue 6: no task of its own for the thread facade's wrapper
                direct = False
                value = await _await_offloaded(value)
            else:
                guard = _Guard(value)
                value = await guard.run()
            if isinstance(value, _Raised):
                return from_exception(value.exc)
            continue
        if not futures or not _is_future(value):
            return Outcome(RESULT, value)
        if on_pending is not None:
            await on_pending()
        done = await _wait(_as_asyncio(value))
        if done.cancelled():
            return Outcome(CANCELLED, "the subscriber's future was cancelled")
        error = done.exception()
        if error is not None:
            return from_exception(error)
        value = done.result()


class _Raised(NamedTuple):
    exc: BaseException


#: A subscriber marked :data:`~kiwipy._dispatch.OFFLOADED` (the thread facade's wrapper) is
#: awaited directly, without a :class:`_Guard` task, on Pythons that can tell our own
#: cancellation apart (``Task.cancelling``, 3.11+).
_DIRECT = sys.version_info >= (3, 11)


async def _await_offloaded(awaitable: Awaitable[Any]) -> Any:
    """:returns: what *awaitable* returns, or :class:`_Raised` for what it raises, except
    the cancellation of the current task, which propagates (as with :class:`_Guard`)."""
    try:
        return await awaitable
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return _Raised(exc)
    except BaseException as exc:
        return _Raised(exc)


class _Guard:
    """Runs the subscriber's awaitable as a task of its own, turning anything it raises
    (``SystemExit`` and ``CancelledError`` included) into a :class:`_Raised` value instead of
    letting it escape: a ``SystemExit`` escaping a task would stop the event loop. Only a
    cancellation that *we* asked for (because our own task was cancelled) propagates."""

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self._awaitable = awaitable
        self._ours = False

    async def _body(self) -> Any:
        try:
            return await self._awaitable
        except asyncio.CancelledError as exc:
            if self._ours:
                raise
            return _Raised(exc)
        except BaseException as exc:
            return _Raised(exc)

    async def run(self) -> Any:
        task = asyncio.ensure_future(self._body())
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            self._ours = True
            task.cancel()
            raise
        return task.result()


def _is_future(value: Any) -> bool:
    return asyncio.isfuture(value) or isinstance(value, concurrent.futures.Future)


def _as_asyncio(future: Any) -> asyncio.Future[Any]:
    if isinstance(future, concurrent.futures.Future):
        return asyncio.wrap_future(future)
    return future  # type: ignore[no-any-return]


async def _wait(future: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """Wait for a future the subscriber handed us without letting *its* cancellation look
    like ours; if *we* are cancelled it is left alone (it is not ours to cancel)."""
    await asyncio.wait((future,))
    return future


def from_exception(exc: BaseException) -> Outcome:
    """:returns: the outcome of a subscriber that raised *exc* (or whose future failed with
    it): ``TaskRejected`` passes the task on, ``kiwipy.CancelledError`` cancels, anything
    else is an exception to report."""
    exc = original(exc)
    if isinstance(exc, exceptions.TaskRejected):
        return Outcome(REJECTED, exc)
    if isinstance(exc, concurrent.futures.CancelledError):
        # kiwipy.CancelledError: kiwipy 0.9's way for a subscriber to cancel its outcome.
        return Outcome(CANCELLED, str(exc) or "the subscriber cancelled")
    if not isinstance(exc, Exception):
        _LOGGER.warning("subscriber raised %r; reported as an exception", exc)
    return Outcome(EXCEPTION, exc)


def outcome_of(future: asyncio.Future[Any]) -> Outcome:
    """:returns: the :class:`Outcome` of a finished future (a pull-mode task's): cancelling
    it cancels the task's outcome, as a subscriber raising ``kiwipy.CancelledError`` does."""
    if future.cancelled():
        return Outcome(CANCELLED, "the task's outcome was cancelled")
    exc = future.exception()
    if exc is not None:
        return from_exception(exc)
    return Outcome(RESULT, future.result())


T = TypeVar("T")


def encode_reply(
    encode: Callable[[Any], T],
    reply: Any,
    error_reply: Callable[[BaseException], Any],
    encoder: str,
) -> tuple[T, bool]:
    """:returns: ``(encode(reply), True)``, or, when *reply* cannot be encoded, the encoded
    ``error_reply(EncodeError)`` and ``False``. Whatever the encoder raises counts
    (``BaseException`` included: encoding a result runs the user's code), so the requester
    always gets an answer.

    :param encoder: the encoder's name, for the error.
    """
    try:
        return encode(reply), True
    except BaseException as exc:  # any failure here must become a reply
        error = exc
        if not isinstance(exc, (exceptions.EncodeError, exceptions.MessageTooLarge)):
            text = f"cannot encode the reply: {type(exc).__qualname__}: {exception_text(exc)}"
            error = exceptions.EncodeError(text, encoder=encoder)
        return encode(error_reply(error)), False
