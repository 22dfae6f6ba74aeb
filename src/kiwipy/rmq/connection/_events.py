"""Connection state changes: their names, and how they reach listeners and the log.

Invariants:

* An event is a :class:`ConnectionEvent`: a ``str`` equal to its name (so listeners written
  for plain strings keep working) whose ``detail`` says what happened, for people.
* Each event is logged exactly once, when it happens, at a level that says whether the user
  must act (``ERROR``: something was given up), may want to know (``WARNING``) or not
  (``INFO``/``DEBUG``). A listener that raises is logged and never stops the others.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

from ... import _tracing

__all__ = (
    "CLOSED",
    "CONNECTED",
    "CONSUMER_CANCELLED",
    "DISCONNECTED",
    "LOST",
    "RECONNECTED",
    "RESTORE_FAILED",
    "STALLED",
    "SUBSCRIBER_LOST",
    "ConnectionEvent",
    "Events",
    "Listener",
)

_LOGGER = logging.getLogger("kiwipy.rmq.communicator")

CONNECTED = "connected"
"""The first connection is up."""
DISCONNECTED = "disconnected"
"""The connection failed; reconnection has started."""
STALLED = "stalled"
"""The broker stopped answering on a connection that looked open; it is reset (then
``disconnected``)."""
RECONNECTED = "reconnected"
"""A new connection is up and every subscriber was restored (or is being retried)."""
LOST = "lost"
"""Not reconnected within ``recovery_timeout``: waiting replies failed, sends raise."""
CONSUMER_CANCELLED = "consumer-cancelled"
"""The broker cancelled one of our consumers (e.g. its queue was deleted); restoring it."""
RESTORE_FAILED = "restore-failed"
"""Restoring something failed; it is retried with backoff."""
SUBSCRIBER_LOST = "subscriber-lost"
"""A subscriber could not be restored and was removed (its RPC identifier is held by another
communicator)."""
CLOSED = "closed"
"""The communicator was closed."""

_LEVELS = {
    CONNECTED: logging.DEBUG,
    DISCONNECTED: logging.WARNING,
    STALLED: logging.WARNING,
    RECONNECTED: logging.INFO,
    LOST: logging.ERROR,
    CONSUMER_CANCELLED: logging.WARNING,
    RESTORE_FAILED: logging.WARNING,
    SUBSCRIBER_LOST: logging.ERROR,
    CLOSED: logging.DEBUG,
}


class ConnectionEvent(str):
    """A connection state change, equal to its name (``event == 'reconnected'``).

    :ivar detail: what happened, in words (may be empty).
    """

    detail: str

    def __new__(cls, name: str, detail: str = "") -> ConnectionEvent:
        event = super().__new__(cls, name)
        event.detail = detail
        return event


Listener = Callable[[str], None]


class Events:
    """The listeners of one connection, and the one place events are logged.

    :param describe: names the connection in log lines (called at each event: the URL of a
        reconnected connection may differ).
    """

    def __init__(self, describe: Callable[[], str]) -> None:
        self._describe = describe
        self._listeners: list[Listener] = []
        self._down_since: Optional[float] = None  # for the time-to-recover metric

    def add(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def __contains__(self, listener: object) -> bool:
        return listener in self._listeners

    def emit(self, name: str, detail: str = "") -> ConnectionEvent:
        """Log the event once and tell every listener. :returns: the event."""
        event = ConnectionEvent(name, detail)
        suffix = f": {detail}" if detail else ""
        _LOGGER.log(_LEVELS.get(name, logging.INFO), "%s %s%s", self._describe(), name, suffix)
        self._down_since = _tracing.connection_event(name, self._down_since)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                _LOGGER.exception("connection listener %r failed on %r", listener, name)
        return event
