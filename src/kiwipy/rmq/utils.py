"""kiwipy 0.9's reply helpers (``kiwipy.rmq.utils``), kept for code that imports them.

The reply shapes live in :mod:`kiwipy.rmq.protocol`; these functions are thin wrappers that
add kiwipy 0.9's future-based helpers on top.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
from collections.abc import Mapping
from typing import Any, Callable

from . import protocol
from .protocol import (  # noqa: F401 - kiwipy 0.9's ``rmq.utils`` names, re-exported
    CANCELLED_KEY,
    EXCEPTION_KEY,
    HOST_KEY,
    HOSTNAME_KEY,
    PENDING_KEY,
    PID_KEY,
    RESULT_KEY,
    add_host_info,
    cancelled_response,
    exception_response,
    get_host_info,
    pending_response,
    result_response,
)

__all__ = ()  # as in kiwipy 0.9: nothing here is re-exported by ``kiwipy.rmq``


def _new_future() -> Any:
    """An asyncio future on the running loop, or a thread-world future outside of one (the
    two share the API these helpers use)."""
    try:
        return asyncio.get_running_loop().create_future()
    except RuntimeError:
        return concurrent.futures.Future()


def response_to_future(response: Any, future: Any = None) -> Any:
    """Set the outcome in the reply *response* on *future* (a new one if ``None``).

    Keys are checked in kiwipy 0.9's order: cancelled, exception, result, pending (which sets
    a new future as the result).

    :raises TypeError: if *response* is not a mapping.
    :raises ValueError: if it has none of the keys.
    """
    if not isinstance(response, Mapping):
        raise TypeError("Response must be a mapping")
    if future is None:
        future = _new_future()
    try:
        reply = protocol.decode_reply(response)
    except protocol.MalformedMessage:
        raise ValueError(f"Unknown response type '{response}'") from None
    if reply.kind == "cancelled":
        future.cancel()
    elif reply.kind == "exception":
        future.set_exception(reply.value)
    elif reply.kind == "result":
        future.set_result(reply.value)
    else:
        future.set_result(_new_future())
    return future


def response_result(response: Any) -> Any:
    """:returns: the result in *response*; raises its exception, or
    :class:`concurrent.futures.CancelledError` for a cancelled reply."""
    return response_to_future(response, concurrent.futures.Future()).result(0)


def future_to_response(future: Any) -> dict[str, Any]:
    """:returns: the reply for the finished *future*."""
    if future.cancelled():
        return cancelled_response()
    try:
        return result_response(future.result())
    except Exception as exc:
        return exception_response(exc)


def ensure_coroutine(coro_or_fn: Any) -> Callable[..., Any]:
    """:returns: a coroutine function calling *coro_or_fn* and awaiting whatever awaitable
    it returns (so a callable object with ``async def __call__`` works: bug B11).

    :raises TypeError: if *coro_or_fn* is not callable.
    """
    if inspect.iscoroutinefunction(coro_or_fn):
        return coro_or_fn  # type: ignore[no-any-return]
    if not callable(coro_or_fn):
        raise TypeError("coro_or_fn must be a callable")

    @functools.wraps(coro_or_fn)
    async def wrap(*args: Any, **kwargs: Any) -> Any:
        result = coro_or_fn(*args, **kwargs)
        if inspect.isawaitable(result) and not asyncio.isfuture(result):
            return await result
        return result

    return wrap
