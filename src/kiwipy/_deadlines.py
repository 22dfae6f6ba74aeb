"""Deadlines of RPCs and tasks, the same on every transport (issue 16).

A caller gives ``timeout`` seconds to ``rpc_send`` or ``task_send``. Three things follow:

* the caller's future fails with :class:`~kiwipy.DeadlineExceeded` when no reply came in
  time (:func:`arm`); a reply that comes later is dropped, as one for a cancelled future is;
* the request carries its absolute deadline (epoch seconds, header :data:`HEADER`), which the
  receiver checks on arrival (:func:`expired`): a request past it is never started (RabbitMQ
  also gets an AMQP ``expiration``, :func:`expiration`, so the broker drops it unstarted);
* a handler running for it sees the seconds left (:func:`deadline`, a context variable set
  while it runs: :func:`running_until`), and a coroutine handler still running at the
  deadline is cancelled (:func:`bounded`); a call a thread communicator queued behind a busy
  handler is checked again when its turn comes (:func:`guarded`).

Without a timeout nothing changes: no header, no expiration, no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections.abc import Awaitable, Iterator, Mapping
from typing import Any, Callable, Optional, TypeVar

from . import exceptions
from ._outcome import Outcome, from_exception

T = TypeVar("T")

__all__ = (
    "EXPIRED",
    "HEADER",
    "absolute",
    "arm",
    "bounded",
    "check_timeout",
    "current",
    "cut_short",
    "deadline",
    "expiration",
    "expired",
    "from_headers",
    "guarded",
    "header_value",
    "remaining",
    "running_until",
)

#: The header holding a request's absolute deadline, in seconds since the epoch (a decimal
#: string, e.g. ``"1733350000.250"``).
HEADER = "x-kiwipy-deadline"
#: The reason a task found past its deadline on arrival is dead-lettered with.
EXPIRED = "deadline-exceeded"

_DEADLINE: contextvars.ContextVar[Optional[float]] = contextvars.ContextVar(
    "kiwipy_deadline", default=None
)


def deadline() -> Optional[float]:
    """:returns: in a subscriber serving an RPC or task sent with a ``timeout``, the seconds
    left until its deadline (``0.0`` once it passed); ``None`` anywhere else."""
    at = _DEADLINE.get()
    if at is None:
        return None
    return max(0.0, at - time.time())


def current() -> Optional[float]:
    """:returns: the absolute deadline (epoch seconds) of the request being handled in this
    context, or ``None``."""
    return _DEADLINE.get()


async def bounded(at: Optional[float], invoking: Awaitable[Outcome]) -> Outcome:
    """:returns: the outcome of *invoking* (a subscriber call, :func:`kiwipy._outcome.invoke`)
    run with :func:`deadline` reporting *at*; at *at*, a call still running is cancelled
    and the outcome is :class:`~kiwipy.DeadlineExceeded` (a function running on the loop
    cannot be interrupted; one on a worker thread runs on, its result discarded). Without
    a deadline, *invoking* is simply awaited, as before."""
    if at is None:
        return await invoking
    with running_until(at):
        try:
            return await asyncio.wait_for(invoking, max(0.0, at - time.time()))
        except asyncio.TimeoutError:
            return from_exception(_HandlerDeadline())


class _HandlerDeadline(exceptions.DeadlineExceeded):
    """The outcome of a handler cancelled at its deadline (:func:`cut_short`)."""

    def __init__(self) -> None:
        super().__init__("the handler was still running at its deadline")


def cut_short(outcome: Outcome) -> bool:
    """:returns: whether *outcome* is that of a handler :func:`bounded` cancelled at its
    deadline. An RPC or a task so cut short gets no reply (the task is acknowledged): its
    caller's future failed with :class:`~kiwipy.DeadlineExceeded` at the same moment, on
    its own, and a reply racing that would fail it with a ``RemoteException`` instead."""
    return isinstance(outcome.value, _HandlerDeadline)


def guarded(call: Callable[[], T]) -> Callable[[], T]:
    """:returns: *call* bound to the deadline of this context, for a worker thread: it
    raises :class:`~kiwipy.DeadlineExceeded` instead of starting once the deadline passed
    (it waited for its turn behind a busy handler), else runs with :func:`deadline`
    reporting it."""
    at = current()
    if at is None:
        return call

    def run() -> T:
        if expired(at):
            raise exceptions.DeadlineExceeded("the request's deadline passed before it started")
        with running_until(at):
            return call()

    return run


@contextlib.contextmanager
def running_until(at: Optional[float]) -> Iterator[None]:
    """Make :func:`deadline` report *at* (epoch seconds, or ``None``) in this context."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check_timeout(timeout: Optional[float]) -> Optional[float]:
    """:returns: *timeout* as a float (``None`` stays ``None``).

    :raises TypeError: if it is not a number.
    :raises ValueError: unless it is finite and positive.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return float(timeout)


def absolute(timeout: Optional[float]) -> Optional[float]:
    """:returns: the deadline *timeout* seconds from now, in epoch seconds (or ``None``)."""
    return None if timeout is None else time.time() + timeout


def expired(at: Optional[float]) -> bool:
    """:returns: whether the deadline *at* (epoch seconds, or ``None``: none) has passed."""
    return at is not None and time.time() >= at


def remaining(at: Optional[float]) -> Optional[float]:
    """:returns: the seconds left until the deadline *at* (0 if it passed; ``None``: none),
    to arm a caller's future after a send that took time of its own."""
    return None if at is None else max(0.0, at - time.time())


def expiration(timeout: float) -> str:
    """:returns: *timeout* as an AMQP per-message ``expiration`` (milliseconds, a string;
    at least 1, since ``"0"`` would let a waiting consumer take it at once)."""
    return str(max(1, math.ceil(timeout * 1000)))


def header_value(at: Optional[float]) -> str:
    """:returns: the deadline *at* as the :data:`HEADER` value: epoch seconds as a decimal
    string (an AMQP float field may be single precision, which cannot hold the time),
    rounded *down* to the millisecond: the receiver's deadline is never later than the
    caller's own timer (:func:`arm`), so a caller that has ``DeadlineExceeded`` knows the
    request will not start any more."""
    assert at is not None
    return f"{math.floor(at * 1000) / 1000:.3f}"


def from_headers(headers: Optional[Mapping[str, Any]]) -> Optional[float]:
    """:returns: the deadline in *headers*, or ``None`` if there is none (a malformed one is
    ignored: the request runs, as it would for a peer that sets no deadline)."""
    if not headers:
        return None
    value = headers.get(HEADER)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        at = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return at if at is not None and math.isfinite(at) else None


def arm(
    future: asyncio.Future[Any],
    timeout: Optional[float],
    on_expire: Optional[Callable[[], None]] = None,
) -> None:
    """Fail *future* with :class:`~kiwipy.DeadlineExceeded` after *timeout* seconds unless
    it is settled by then (following a ``pending`` reply into its inner future); then call
    *on_expire* (to stop waiting for the reply). ``None``: no deadline.

    Armed just after the request's deadline was computed, it fails the future no earlier
    than that deadline by the wall clock (an event loop may run a timer a little early), so
    a caller that has ``DeadlineExceeded`` knows the request will not start any more."""
    if timeout is None:
        return
    _Timer(future, timeout, on_expire).start()


class _Timer:
    """The deadline of one caller's future (:func:`arm`)."""

    def __init__(
        self,
        future: asyncio.Future[Any],
        timeout: float,
        on_expire: Optional[Callable[[], None]],
    ) -> None:
        self._future = future
        self._timeout = timeout
        self._at = time.time() + timeout
        self._on_expire = on_expire
        self._handle: Optional[asyncio.TimerHandle] = None

    def start(self) -> None:
        self._schedule(self._timeout)
        self._future.add_done_callback(self._disarm)

    def _schedule(self, delay: float) -> None:
        self._handle = self._future.get_loop().call_later(delay, self._expire)

    def _disarm(self, future: asyncio.Future[Any]) -> None:
        # a pending reply settles the outer future with an inner one: the deadline still holds
        if future.cancelled() or future.exception() is not None:
            self._cancel()
        elif not isinstance(future.result(), asyncio.Future):
            self._cancel()

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _expire(self) -> None:
        left = self._at - time.time()
        if left > 0:
            self._schedule(left)
            return
        target = self._future
        while target.done():
            if target.cancelled() or target.exception() is not None:
                return
            inner = target.result()
            if not isinstance(inner, asyncio.Future):
                return
            target = inner
        target.set_exception(exceptions.DeadlineExceeded(f"no reply within {self._timeout:g} s"))
        if self._on_expire is not None:
            self._on_expire()
