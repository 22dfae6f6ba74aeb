"""RPC identifiers found taken when an RPC subscriber is restored after a reconnection.

An RPC subscriber holds its identifier as an exclusive queue (:mod:`kiwipy.rmq.messages`).
When its connection comes back, declaring that queue again can fail for two reasons that look
the same (``RESOURCE_LOCKED``): another communicator took the identifier while we were away,
or the broker still holds it for our *previous* connection, which it has not yet noticed is
dead (it notices within about two heartbeats, or at once if it gets our reset).

Invariant: an identifier is tried again for :func:`patience` seconds from the first refusal;
after that it counts as taken for good: its subscriber is removed and ``subscriber-lost``
reported. Never two subscribers for one identifier.
"""

from __future__ import annotations

from typing import Any

from ..connection import _events
from ..connection._session import Session
from ..connection._watchdog import stall_limit

__all__ = ("TakenIdentities", "patience")


def patience(session: Session) -> float:
    """:returns: seconds to keep trying: ``recovery_timeout``, or two heartbeats if longer."""
    seconds = float(session.options["recovery_timeout"])
    connection = session.live_connection()
    if connection is not None:
        seconds = max(seconds, 2 * stall_limit(session, connection))
    return seconds


class TakenIdentities:
    """The identifiers refused since when, for one subscriber side."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._since: dict[Any, float] = {}

    def keep_trying(self, identifier: Any, refusal: BaseException) -> bool:
        """Record a refusal of *identifier*. :returns: whether to try again later; if not,
        ``subscriber-lost`` has been reported (the caller removes the subscriber)."""
        now = self._session.loop.time()
        since = self._since.setdefault(identifier, now)
        if now - since < patience(self._session):
            return True
        del self._since[identifier]
        self._session.report(_events.SUBSCRIBER_LOST, f"{refusal}; its subscriber was removed")
        return False

    def regained(self, identifier: Any) -> None:
        self._since.pop(identifier, None)
