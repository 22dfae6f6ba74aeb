"""The pump: one thread per :class:`~kiwipy.sqlite._broker.SqliteBroker` that waits on its
doorbell and does what the rings ask for.

At idle it sleeps in ``select`` on the doorbell socket, waking only to check its peers' locks
(every ``liveness_interval``, a few system calls; then it also writes the acks waiting,
as at every wake-up) and, every ``safety_poll``, to look for
everything at once, in case a ring was lost. A ring wakes it within the time a thread takes
to be scheduled.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any, Protocol

from .. import exceptions
from . import _doorbell
from ._doorbell import Doorbell

__all__ = ("Pump", "PumpHost")


class _Settings(Protocol):
    @property
    def liveness_interval(self) -> float: ...

    @property
    def safety_poll(self) -> float: ...


class PumpHost(Protocol):
    """What the pump calls back in the broker that owns it (a protocol, so that this module
    does not import the broker's, which starts the pump)."""

    @property
    def path(self) -> str: ...

    @property
    def settings(self) -> _Settings: ...

    def check_peers(self) -> None: ...

    def write_acks(self) -> None: ...

    def prune(self) -> None: ...

    def receive(self, messages: list[tuple[bytes, dict[str, Any], bytes]]) -> None: ...

    def pump(self, kinds: set[bytes]) -> None: ...


_LOGGER = logging.getLogger(__name__)


class Pump:
    """The receiving thread of *broker*, woken by *doorbell*."""

    def __init__(self, broker: PumpHost, doorbell: Doorbell) -> None:
        self._broker = broker
        self._doorbell = doorbell
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name=f"kiwipy sqlite pump {broker.path}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (not when called from the thread itself)."""
        self._stopping = True
        self._doorbell.ring_self(_doorbell.STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        settings = self._broker.settings
        now = time.monotonic()
        next_check = now + settings.liveness_interval
        next_poll = now  # a first look at everything
        while not self._stopping:
            timeout = max(0.0, min(next_check, next_poll) - time.monotonic())
            try:
                readable, _, _ = select.select([self._doorbell], [], [], timeout)
                kinds, messages = self._doorbell.drain() if readable else (set(), [])
            except (OSError, ValueError):  # the socket was closed under us: stopping
                return
            if self._stopping or _doorbell.STOP in kinds:
                return
            now = time.monotonic()
            try:
                if now >= next_check:
                    next_check = now + settings.liveness_interval
                    self._broker.check_peers()
                    self._broker.write_acks()
                if now >= next_poll:
                    next_poll = now + settings.safety_poll
                    kinds |= _doorbell.ALL
                    self._broker.prune()
                if messages:
                    self._broker.receive(messages)
                if kinds:
                    self._broker.pump(kinds)
            except exceptions.StorageError as exc:
                _LOGGER.warning("kiwipy sqlite pump: %s (retrying at the next ring)", exc)
            except Exception:
                _LOGGER.exception("kiwipy sqlite pump failed on %s", self._broker.path)
