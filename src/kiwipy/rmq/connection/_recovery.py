"""Getting everything back after a failure: restorers, their retries, and reconnect pacing.

Invariants:

* Components register *restorers* per purpose (one channel each). A restorer re-declares what
  its component owns and consumes again what is not consuming; it must be idempotent, because
  it also runs when only one consumer of its purpose was cancelled by the broker, and again
  after a partial failure.
* One purpose is never restored twice at the same time (a lock per purpose), and restores of
  one purpose start at most once a second (a consumer the broker keeps cancelling cannot make
  us spin).
* After a reconnection every purpose is restored, in registration order. A purpose whose
  restorer failed is retried with backoff (0.5 s doubling up to 10 s) until it succeeds, the
  connection fails again (the next reconnection restores everything anyway) or the session
  closes. A failure is reported once (``restore-failed``) until that purpose is restored; a
  restorer raising :class:`RestoreLater` asks for a retry without being a failure.
* An outage (:class:`Recovery`) starts when the connection fails while it was up, and is
  reported once (``disconnected``), however many reconnection attempts fail. While it lasts,
  the session is not *ready* (sends wait). After ``recovery_timeout`` seconds it is reported
  ``lost`` (waiting replies fail), and reconnection goes on. It ends once the new connection
  is up *and* every purpose was restored: then the session is ready and ``reconnected`` is
  reported. A connection that cannot reconnect is ``lost`` at once. Operations wait for the
  connection (:meth:`Recovery.wait_connected`: channels) or for the end of the outage
  (:meth:`Recovery.wait_ready`: sends), never longer than ``recovery_timeout``.
* Reconnect pacing: aio-pika's robust connection retries every ``reconnect_interval``
  seconds (5 by default, or the URL's ``reconnect_interval``). :class:`ReconnectPacing` makes
  the first attempts quick (0.1 s) and doubles the pause while the outage lasts, up to that
  interval: quick recovery from a blip, no hammering of a broker that is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, Callable, Optional

import aiormq.abc

from ... import exceptions
from . import _aiormq_boundary, _amqp, _events
from ._session_view import SessionView

__all__ = ("ReconnectPacing", "Recovery", "RestoreLater", "Restoration", "Restorer")

_LOGGER = logging.getLogger("kiwipy.rmq.communicator")

Restorer = Callable[[], Awaitable[None]]

_SPACING = 1.0
_RETRY_FIRST = 0.5
_RETRY_MAX = 10.0


class RestoreLater(Exception):
    """Raised by a restorer that should run again a little later (for instance an RPC
    identity still held for our *previous* connection, which the broker has not yet noticed
    is dead)."""


class Restoration:
    """The restorers of one session and their retries.

    :param events: where failures are reported.
    :param alive: tells whether the connection is up (a restorer failing while it is not is
        no failure: the next reconnection restores everything).
    """

    def __init__(self, events: _events.Events, alive: Callable[[], bool]) -> None:
        self._events = events
        self._alive = alive
        self._restorers: dict[str, dict[object, Restorer]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._last: dict[str, float] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._failing: set[str] = set()

    def add(self, purpose: str, key: object, restorer: Restorer) -> None:
        self._restorers.setdefault(purpose, {})[key] = restorer

    def remove(self, purpose: str, key: object) -> None:
        self._restorers.get(purpose, {}).pop(key, None)

    def has(self, purpose: str) -> bool:
        return bool(self._restorers.get(purpose))

    async def restore_all(self) -> bool:
        """Restore every purpose (after a reconnection), scheduling retries for failures.

        :returns: ``False`` if the connection failed again meanwhile.
        """
        self.cancel_pending()
        for purpose in list(self._restorers):
            done = await self._restore(purpose)
            if done is None:
                return False
            if not done:
                self._schedule(purpose, _RETRY_FIRST)
        return True

    def restore_soon(self, purpose: str) -> None:
        """Restore *purpose* as soon as the spacing allows (its channel was closed by the
        broker, or one of its consumers cancelled)."""
        if purpose in self._pending:
            return  # a restore of it is coming anyway
        loop = asyncio.get_running_loop()
        delay = self._last.get(purpose, -_SPACING) + _SPACING - loop.time()
        self._schedule(purpose, max(delay, 0.0))

    def cancel_pending(self) -> None:
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()

    def _schedule(self, purpose: str, delay: float) -> None:
        self._pending[purpose] = asyncio.ensure_future(self._retry(purpose, delay))

    async def _retry(self, purpose: str, delay: float) -> None:
        try:
            while True:
                await asyncio.sleep(delay)
                done = await self._restore(purpose)
                if done is None or done:
                    return
                delay = min(max(delay * 2, _RETRY_FIRST), _RETRY_MAX)
        finally:
            if self._pending.get(purpose) is asyncio.current_task():
                del self._pending[purpose]

    async def _restore(self, purpose: str) -> Optional[bool]:
        """:returns: ``True`` when restored, ``False`` to retry, ``None`` if the connection
        is down (nothing to do until it is back)."""
        async with self._locks.setdefault(purpose, asyncio.Lock()):
            self._last[purpose] = asyncio.get_running_loop().time()
            if not self._alive():
                return None
            done = True
            for key, restorer in list(self._restorers.get(purpose, {}).items()):
                done = await self._run(purpose, key, restorer) and done
                if not self._alive():
                    return None
        if done and purpose in self._failing:
            self._failing.discard(purpose)
            _LOGGER.info("restored %s after earlier failures", purpose)
        return done

    async def _run(self, purpose: str, key: object, restorer: Restorer) -> bool:
        try:
            await restorer()
        except RestoreLater as exc:
            _LOGGER.info("restoring %s: %s; trying again shortly", purpose, exc)
            return False
        except Exception as exc:
            if not self._alive():
                return False
            if purpose not in self._failing:
                self._failing.add(purpose)
                detail = f"{key!r} on {purpose}: {type(exc).__name__}: {exc}"
                self._events.emit(_events.RESTORE_FAILED, detail)
            _LOGGER.debug("restorer %r failed", key, exc_info=True)
            return False
        return True


class ReconnectPacing:
    """Paces aio-pika's reconnection attempts (module doc) by adjusting its
    ``reconnect_interval``; does nothing for connections that do not reconnect.

    :param connection: the aio-pika connection.
    :param ceiling: the longest pause (``None``: the connection's ``reconnect_interval``).
    """

    FIRST = 0.1

    def __init__(self, connection: Any, ceiling: Optional[float] = None) -> None:
        self._connection = connection
        configured = _aiormq_boundary.reconnect_interval(connection)
        if configured is None:
            ceiling = 0.0  # it does not reconnect: nothing to pace
        self._ceiling = float(ceiling or configured or 0)
        self._task: Optional[asyncio.Task[None]] = None
        self._set(self.FIRST)

    @property
    def ceiling(self) -> float:
        """The longest pause between two attempts (the configured ``reconnect_interval``)."""
        return self._ceiling

    def outage_started(self) -> None:
        if self._ceiling > 0 and self._task is None:
            self._task = asyncio.ensure_future(self._grow())

    def outage_ended(self) -> None:
        self.close()
        self._set(self.FIRST)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _set(self, interval: float) -> None:
        if self._ceiling > 0:
            _aiormq_boundary.set_reconnect_interval(self._connection, min(interval, self._ceiling))

    async def _grow(self) -> None:
        interval = self.FIRST
        while True:
            self._set(interval)
            await asyncio.sleep(interval)
            interval = min(interval * 2, self._ceiling)


class Recovery:
    """The outages of one session's connection, from failure to restored (module doc).

    :param session: the session; its connection's close and reconnect callbacks are ours.
    """

    def __init__(self, session: SessionView) -> None:
        self._session = session
        self._connection = session.connection
        self.restoration = Restoration(session.events, lambda: session.is_connected)
        self.ready = asyncio.Event()  # no outage under way: sends may go
        self.ready.set()
        self.robust = hasattr(self._connection, "reconnect_callbacks")
        ceiling = session.options["reconnect_max_interval"]
        self._pacing = ReconnectPacing(self._connection, ceiling)
        self._up = True
        self._lost_timer: Optional[asyncio.TimerHandle] = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._connection.close_callbacks.add(self._on_closed)
        if self.robust:
            self._connection.reconnect_callbacks.add(self._on_reconnected)

    def _on_closed(self, _sender: Any, exc: Optional[BaseException]) -> None:
        connection = self._connection
        if self._session.closed or connection.is_closed or connection.close_called:
            return
        self.ready.clear()
        self._session.forget_channels()
        if not self._up:
            _LOGGER.debug("reconnection attempt failed: %r", exc)
            return  # the same outage: a failed attempt is no new disconnection
        self._up = False
        self._session.report(_events.DISCONNECTED, repr(exc) if exc else "")
        if not self.robust:
            self._session.report(_events.LOST, "the connection does not reconnect")
            return
        self._pacing.outage_started()
        if self._lost_timer is None:
            timeout = self._session.options["recovery_timeout"]
            detail = f"not reconnected within {timeout:g} s; still trying"
            report = self._session.report
            self._lost_timer = asyncio.get_running_loop().call_later(
                timeout, report, _events.LOST, detail
            )

    def _on_reconnected(self, _sender: Any) -> None:
        if self._session.closed:
            return
        self._cancel_lost_timer()
        self._up = True
        self._session.forget_channels()
        self._pacing.outage_ended()
        for stale in list(self._tasks):  # a restore of the previous connection
            stale.cancel()
        task = asyncio.ensure_future(self._restore_all())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restore_all(self) -> None:
        if await self.restoration.restore_all() and self._session.is_connected:
            self.ready.set()
            self._session.report(_events.RECONNECTED)

    # Waiting for the connection (what operations do during an outage)

    async def wait_connected(self) -> aiormq.abc.AbstractConnection:
        """See :meth:`kiwipy.rmq.connection._session.Session.wait_connected`."""
        session = self._session
        if session.closed:
            raise exceptions.CommunicatorClosed
        connection = session.live_connection()
        deadline = asyncio.get_running_loop().time() + session.options["recovery_timeout"]
        while connection is None:
            self._check_can_wait()
            # ``connected`` may be set a moment before the new transport is in place
            await self._wait_for(self._connection.connected, deadline)
            await asyncio.sleep(0.01)
            connection = session.live_connection()
        return connection

    async def wait_ready(self, deadline: float) -> None:
        """Wait until no outage is under way (connected *and* restored), until *deadline*.

        :raises ConnectionLost: past *deadline*, or if the connection cannot come back.
        """
        while not self.ready.is_set():
            self._check_can_wait()
            await self._wait_for(self.ready, deadline)

    def _check_can_wait(self) -> None:
        if self._session.closed:
            raise exceptions.CommunicatorClosed
        if not self._session.can_reconnect:
            raise _amqp.ConnectionGone("the connection is closed and cannot reconnect")

    async def _wait_for(self, event: asyncio.Event, deadline: float) -> None:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            timeout = self._session.options["recovery_timeout"]
            raise _amqp.ConnectionGone(f"the connection was not restored within {timeout} s")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), min(remaining, 0.5))

    def _cancel_lost_timer(self) -> None:
        if self._lost_timer is not None:
            self._lost_timer.cancel()
            self._lost_timer = None

    def close(self) -> None:
        """Stop reacting to the connection: the session is closing."""
        self.ready.set()  # wake waiting sends: they fail on their next step
        self._cancel_lost_timer()
        self.restoration.cancel_pending()
        self._pacing.close()
        for task in list(self._tasks):
            task.cancel()
        self._connection.close_callbacks.discard(self._on_closed)
        if self.robust:
            self._connection.reconnect_callbacks.discard(self._on_reconnected)
