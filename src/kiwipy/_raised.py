"""Whatever user code raises, set on an asyncio future.

Two exceptions cannot travel on an asyncio future:

* ``Future.set_exception`` refuses :class:`StopIteration` (``TypeError`` on Python 3.11, a
  ``RuntimeError`` in its place from 3.12): it would end the generator awaiting it;
* :class:`GeneratorExit` is accepted, but a task that was suspended on the future gets it
  *thrown* into its coroutine, which closes every coroutine it awaits instead of raising
  where they wait (PEP 380), so nothing on the way can catch it.

An exception a subscriber raised that does not reach its future as itself is an outcome lost:
the sender waits forever (issue 11). So every place that moves an exception from user code
onto an asyncio future calls :func:`set_exception`, which wraps those two in a
:class:`Carried`, and the place that turns it into an outcome calls :func:`original` to
report what the user raised.
"""

from __future__ import annotations

from typing import Any

__all__ = ("Carried", "exception_text", "original", "set_exception")


_REFUSED = (StopIteration, GeneratorExit)


class Carried(RuntimeError):
    """Carries an exception an asyncio future cannot hold (:attr:`exc`, also the
    ``__cause__``), as Python 3.12's own ``set_exception`` does for ``StopIteration``."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(f"{type(exc).__qualname__} cannot be raised into a future")
        self.exc = exc
        self.__cause__ = exc


def set_exception(future: Any, exc: BaseException) -> None:
    """Set *exc* on *future*, carried in a :class:`Carried` if it is an asyncio future
    that would refuse it (any other future takes it as it is)."""
    if isinstance(exc, _REFUSED) and hasattr(type(future), "_asyncio_future_blocking"):
        exc = Carried(exc)  # the attribute asyncio.isfuture tests, without importing asyncio
    future.set_exception(exc)


def original(exc: BaseException) -> BaseException:
    """:returns: the exception *exc* carries, or *exc* itself."""
    return exc.exc if isinstance(exc, Carried) else exc


def exception_text(exc: BaseException) -> str:
    """:returns: ``str(exc)``, or a description when that raises: building a reply must
    not fail on an exception's text, or the requester gets no reply at all."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__qualname__}: its text cannot be had>"
