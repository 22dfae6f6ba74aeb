"""What every core shares for broadcasts: kiwipy 0.9's four-key envelope, the items of
``broadcast_send_many`` turned into ``broadcast_send``'s arguments (one check, so every
core refuses the same malformed items), and the :class:`Tally` of broadcast handlers behind
the thread facade's barrier."""

from __future__ import annotations

import threading
from collections.abc import Awaitable
from typing import Any, Callable, Optional

__all__ = ("Tally", "batch_arguments", "envelope")


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

    A core calls :meth:`started` on its loop thread when a delivery arrives, before anything
    else can run (so a handler spawned but not yet running counts), and :meth:`finished`
    when that handler is done, whatever its outcome. Cost: two integer updates and an
    uncontended lock per handler; nothing at all without broadcast subscribers.

    A core whose own broadcasts may come back after their confirm (RabbitMQ: the confirm
    and the delivery travel on different channels) sets :attr:`fence` while it receives
    broadcasts: a coroutine function (run on the loop) that returns once every broadcast
    the broker had delivered to it by then has been counted.
    """

    def __init__(self) -> None:
        self._started = 0  # written on the loop thread only
        self._finished = 0
        self._changed = threading.Condition(threading.Lock())
        self.fence: Optional[Callable[[], Awaitable[None]]] = None

    async def fenced_mark(self) -> int:
        """:returns: :meth:`mark` after :attr:`fence` (loop thread)."""
        if self.fence is not None:
            await self.fence()
        return self._started

    def started(self) -> None:
        """A handler was started (loop thread)."""
        self._started += 1

    def finished(self, _handler: object = None) -> None:
        """A handler is done (loop thread; also a done callback, hence the argument)."""
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
