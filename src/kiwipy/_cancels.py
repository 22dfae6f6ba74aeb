"""Cancelling an RPC from its caller's side, on the responder (issue 16).

Cancelling the future ``rpc_send`` returned sends a *cancel* of that request (its correlation
id) to the responder; each transport carries it its own way (memory: a flag on the request;
RabbitMQ: :mod:`kiwipy.rmq.receive._cancel`). The responder keeps its handlers under way in a
:class:`RunningHandlers`, by correlation id: a cancel cancels the handler's task, so a
coroutine handler is interrupted where it awaits; a function running on a worker thread (the
thread facade) runs on, and its result is discarded. A cancelled request gets no reply: its
caller has its cancelled future already.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any, Optional

__all__ = ("RunningHandlers",)


class RunningHandlers:
    """The RPC handlers of one responder under way, by correlation id (module doc)."""

    def __init__(self) -> None:
        self._running: dict[Any, asyncio.Task[Any]] = {}
        self._cancelled: set[Any] = set()

    @contextlib.contextmanager
    def running(self, key: Any) -> Iterator[None]:
        """Register the current task as the handler of the request *key* while the block
        runs (no key: nothing to register, the request cannot be cancelled)."""
        task: Optional[asyncio.Task[Any]] = asyncio.current_task()
        if key is None or task is None:
            yield
            return
        self._running[key] = task
        try:
            yield
        finally:
            if self._running.get(key) is task:
                del self._running[key]

    def cancel(self, key: Any) -> bool:
        """Cancel the handler of the request *key*. :returns: whether one was running."""
        task = self._running.get(key)
        if task is None or task.done():
            return False
        self._cancelled.add(key)
        task.cancel()
        return True

    def was_cancelled(self, key: Any) -> bool:
        """:returns: whether the handler of *key* was cancelled by :meth:`cancel` (asked
        once, by the handler catching its ``CancelledError``)."""
        try:
            self._cancelled.remove(key)
        except KeyError:
            return False
        return True
