"""What every core shares for broadcasts: kiwipy 0.9's four-key envelope, the items of
``broadcast_send_many`` turned into ``broadcast_send``'s arguments (one check, so every
core refuses the same malformed items), the :class:`Tally` of broadcast handlers behind
the thread facade's barrier, and :func:`hand_over`, which gives a broadcast to the thread
facade's subscribers from whichever thread received it.

A broadcast to a thread communicator's subscribers would otherwise cross three threads:
the receiving one (a SQLite pump, a sender) posts it to the loop, the loop decodes it and
hands each subscriber's call to a worker thread, and the worker wakes the loop again to
report the outcome, which goes nowhere but the log and the tally. With :func:`hand_over` it
crosses one: the receiving thread queues each call on its subscriber's worker
(:meth:`kiwipy._dispatch.Dispatcher.submit_serial`, still one after the other per
subscriber), and the worker logs a failure and counts the handler finished itself. It is
taken only without tracing (a broadcast's consumer span lives on the loop) and only when
every subscriber can take it (:func:`can_hand_over`).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Awaitable, Collection
from typing import Any, Callable, Optional

from . import _tracing
from ._dispatch import SUBMIT
from ._outcome import EXCEPTION, from_exception

__all__ = ("Tally", "batch_arguments", "can_hand_over", "envelope", "hand_over", "log_failure")


def envelope(body: Any, sender: Any, subject: Any, correlation_id: Any) -> dict[str, Any]:
    """:returns: kiwipy 0.9's broadcast envelope."""
    return {"body": body, "sender": sender, "subject": subject, "correlation_id": correlation_id}


def batch_arguments(item: Any) -> tuple[Any, Any, Any, Any]:
    """:returns: ``(body, sender, subject, correlation_id)`` for an item of
    ``broadcast_send_many``, which holds the first one to four of them (the others are
    ``None``, as ``broadcast_send``'s defaults).

    :raises TypeError: unless *item* is a tuple of 1 to 4 elements.
    """
    if not isinstance(item, tuple) or not 1 <= len(item) <= 4:
        got = f"a tuple of {len(item)}" if isinstance(item, tuple) else type(item).__name__
        raise TypeError(
            "a broadcast_send_many item is a tuple (body[, sender[, subject[, correlation_id]]])"
            f", got {got}"
        )
    body, sender, subject, correlation_id = item + (None,) * (4 - len(item))
    return body, sender, subject, correlation_id


class Tally:
    """How many broadcast handlers a core has started and finished: what lets a blocking
    ``broadcast_send`` return only once the communicator's own subscribers handled the
    broadcasts it had received (kiwipy 0.9 ran them on the loop before the confirm).

    A core calls :meth:`started` when a delivery arrives (on its loop thread, or on the
    thread that hands it over), before anything else can run (so a handler spawned but not
    yet running counts), and :meth:`finished` when that handler is done, whatever its
    outcome. Cost: two integer updates and two uncontended locks per handler; nothing at all
    without broadcast subscribers.

    A core whose own broadcasts may come back after their confirm (RabbitMQ: the confirm
    and the delivery travel on different channels) sets :attr:`fence` while it receives
    broadcasts: a coroutine function (run on the loop) that returns once every broadcast
    the broker had delivered to it by then has been counted.
    """

    def __init__(self) -> None:
        self._started = 0
        self._finished = 0
        self._changed = threading.Condition(threading.Lock())
        self.fence: Optional[Callable[[], Awaitable[None]]] = None

    async def fenced_mark(self) -> int:
        """:returns: :meth:`mark` after :attr:`fence` (loop thread)."""
        if self.fence is not None:
            await self.fence()
        return self._started

    def started(self) -> None:
        """A handler was started (any thread)."""
        with self._changed:
            self._started += 1

    def finished(self, _handler: object = None) -> None:
        """A handler is done (any thread; also a done callback, hence the argument)."""
        with self._changed:
            self._finished += 1
            self._changed.notify_all()

    def mark(self) -> int:
        """:returns: the handlers started so far (any thread): what :meth:`wait` waits for."""
        return self._started

    def wait(self, mark: int, timeout: float) -> bool:
        """Wait up to *timeout* seconds until *mark* handlers have finished.

        :returns: whether they have (never raises for the wait itself).
        """
        if self._finished >= mark:
            return True
        with self._changed:
            return self._changed.wait_for(lambda: self._finished >= mark, timeout)


def can_hand_over(subscribers: Collection[Any]) -> bool:
    """:returns: whether broadcasts to *subscribers* may take :func:`hand_over`: tracing is
    off and every one is a thread facade's wrapper that takes calls from any thread."""
    return (
        bool(subscribers)
        and not _tracing.ENABLED
        and all(getattr(each, SUBMIT, None) is not None for each in subscribers)
    )


def hand_over(
    subscribers: Collection[Any], args: tuple[Any, ...], tally: Tally, logger: logging.Logger
) -> None:
    """Queue ``subscriber(communicator, *args)`` on each subscriber's worker, from any thread
    (module doc), each counted in *tally* now and finished on its worker."""
    for subscriber in subscribers:
        tally.started()
        done = functools.partial(_handled, subscriber, tally, logger)
        getattr(subscriber, SUBMIT)(args, done)


def log_failure(logger: logging.Logger, subscriber: Any, error: BaseException) -> None:
    """Log on *logger* what a broadcast subscriber raised (its outcome goes nowhere else)."""
    logger.error(
        "Exception in broadcast receiver %r: %r",
        subscriber,
        error,
        exc_info=(type(error), error, error.__traceback__),
    )


def _handled(subscriber: Any, tally: Tally, logger: logging.Logger, ok: bool, value: Any) -> None:
    try:
        if not ok:
            outcome = from_exception(value)  # as the loop's way decides (kiwipy._outcome)
            if outcome.kind == EXCEPTION:
                log_failure(logger, subscriber, outcome.value)
    finally:
        tally.finished()
