"""Noticing a connection that stopped carrying traffic (a black hole, not a reset).

A link can go silent without any error: a pulled cable, a NAT or firewall that dropped the
flow, a paused broker. The socket stays open and aiormq notices only after three missed
heartbeat periods, ``(heartbeat + 1) × 3`` seconds, and then leaks the socket.

Invariants:

* While the session lives, every ``limit / 2`` seconds the watchdog makes one cheap round
  trip (``basic.qos`` on a channel of its own, so it never queues behind other work) and
  waits ``limit`` seconds for the answer. A link that goes silent is therefore noticed within
  ``1.5 × limit`` seconds, where ``limit`` is the ``stall_timeout`` option or else the
  connection's negotiated heartbeat (60 s if heartbeats are off).
* On a missed answer it reports ``stalled`` and resets the socket
  (:func:`kiwipy.rmq.connection._amqp.abort_connection`); the usual recovery follows. A connection that
  changed or failed meanwhile is left alone: there is nothing to reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Optional

import aiormq.abc

from . import _amqp, _events
from ._session_view import SessionView

__all__ = ("WATCHDOG", "Watchdog", "stall_limit")

_LOGGER = logging.getLogger("kiwipy.rmq.communicator")

WATCHDOG = "watchdog"
_NO_HEARTBEAT_LIMIT = 60.0


def stall_limit(session: SessionView, connection: aiormq.abc.AbstractConnection) -> float:
    """:returns: seconds without an answer after which *connection* counts as stalled."""
    configured = session.options["stall_timeout"]
    if configured:
        return float(configured)
    tune = getattr(connection, "connection_tune", None)
    heartbeat = getattr(tune, "heartbeat", 0) or 0
    return float(heartbeat) if heartbeat > 0 else _NO_HEARTBEAT_LIMIT


class Watchdog:
    """The stall watchdog of one session (module doc)."""

    def __init__(self, session: SessionView) -> None:
        self._session = session
        self._task: Optional[asyncio.Task[None]] = None

    def start(self) -> None:
        """Start watching (unless ``stall_timeout`` is 0, which turns the watchdog off)."""
        if self._task is None and self._session.options["stall_timeout"] != 0:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        limit = _NO_HEARTBEAT_LIMIT
        while True:
            connection = self._session.live_connection()
            if connection is not None:
                limit = stall_limit(self._session, connection)
            await asyncio.sleep(limit / 2)
            connection = self._session.live_connection()
            if connection is not None:
                await self._check(connection, limit)

    async def _check(self, connection: aiormq.abc.AbstractConnection, limit: float) -> None:
        try:
            await asyncio.wait_for(self._probe(), limit)
        except asyncio.TimeoutError:
            if self._session.live_connection() is connection:
                detail = f"no answer from the broker within {limit:g} s; resetting the connection"
                self._session.report(_events.STALLED, detail)
                _amqp.abort_connection(self._session.connection, connection, "stalled: " + detail)
        except Exception as exc:  # the link failed under the probe: recovery is on its way
            _LOGGER.debug("watchdog probe failed: %r", exc)

    async def _probe(self) -> None:
        channel = await self._session.channel(WATCHDOG)
        await channel.basic_qos(prefetch_count=0)
