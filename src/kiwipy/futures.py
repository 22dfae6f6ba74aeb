"""Futures as kiwipy hands them out, and helpers to link them.

Thread-world futures are :class:`concurrent.futures.Future` (re-exported as
:data:`kiwipy.Future`); the asyncio communicators return :class:`asyncio.Future`. The helpers
here work on both, since both have the same ``done/cancelled/result/exception`` surface.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Union

from ._raised import set_exception

__all__ = (
    "CancelledError",
    "Future",
    "as_completed",
    "capture_exceptions",
    "chain",
    "copy_future",
    "wait",
)

_LOGGER = logging.getLogger(__name__)

Future = concurrent.futures.Future
CancelledError = concurrent.futures.CancelledError
wait = concurrent.futures.wait
as_completed = concurrent.futures.as_completed

# Either kind of future; the helpers below only use the API both share.
AnyFuture = Union["concurrent.futures.Future[Any]", "Any"]


def copy_future(source: Any, target: Any) -> None:
    """Copy the outcome of the finished future *source* onto *target*.

    Nothing happens if *target* is already done. A cancelled *source* cancels *target*.

    :param source: a finished future (concurrent or asyncio).
    :param target: the future to resolve.
    """
    if target.done():
        return
    if source.cancelled():
        target.cancel()
        return
    error = source.exception()  # any BaseException: a source never fails to be copied
    if error is not None:
        set_exception(target, error)
    else:
        target.set_result(source.result())


def chain(source: Any, target: Any) -> None:
    """Resolve *target* with the outcome of *source* once *source* is done.

    :param source: the future to follow.
    :param target: the future that receives *source*'s result, exception or cancellation.
    """
    source.add_done_callback(lambda fut: copy_future(fut, target))


@contextlib.contextmanager
def capture_exceptions(future: Any, ignore: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Set any :class:`Exception` raised in the block as *future*'s exception, and swallow it.

    :param future: the future that receives the exception.
    :param ignore: exception types that are re-raised instead of captured.
    """
    try:
        yield
    except ignore:
        raise
    except Exception as exc:
        if future.done():
            _LOGGER.debug("future already done, dropping exception %r", exc)
        else:
            set_exception(future, exc)
