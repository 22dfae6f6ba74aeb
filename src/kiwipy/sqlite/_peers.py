"""This process among the others on a SQLite file: its row id and doorbell, the peer table
(every other process's doorbell and lock file), ringing them, and releasing the dead.

Rules:

* A process that dies, however it dies, releases its lock (:mod:`._lockfile`); the first
  broker that notices (its pump checks every ``liveness_interval``, and any broker about to
  send to a process checks it with :meth:`Peers.alive`) releases it: :meth:`ProcessTable.leave
  <._tables.ProcessTable.leave>` gives its tasks back, then the :class:`GoneHandler` answers
  its RPCs ``lost``, then every process is rung to look at the tasks.
* A doorbell that cannot be rung belongs to a process that is gone: the next look at the
  peer table (rung to oneself) finds it.
"""

from __future__ import annotations

import logging
import os
import pathlib
import threading
from typing import Any, Optional, Protocol

from . import _doorbell, _lockfile
from ._doorbell import Doorbell
from ._tables import ProcessTable

__all__ = ("GoneHandler", "Peers")

_LOGGER = logging.getLogger(__name__)


class GoneHandler(Protocol):
    """What answers the RPCs of a process found dead (the RPC component; a protocol, so
    that this module does not import the one that uses it)."""

    def process_gone(self, process: int, lost: list[tuple[int, int, str, int, str]]) -> None:
        """*process* is gone; *lost* are the requests it held, as :meth:`ProcessTable.leave
        <._tables.ProcessTable.leave>` returns them."""


class Peers:
    """The other processes on the file of *table*, as seen from this one.

    :param lock: the broker's lock (:attr:`._local.Connections.lock`).
    """

    def __init__(self, table: ProcessTable, path: str, lock: threading.Lock) -> None:
        self._table = table
        self._path = path
        self._lock = lock
        self._peers: dict[int, tuple[str, str]] = {}  # process id -> (doorbell, lock file)
        #: this process's row, once joined
        self.id = 0
        #: this process's doorbell while it is on the file
        self.doorbell: Optional[Doorbell] = None
        #: answers the RPCs of dead processes
        self.handler: Optional[GoneHandler] = None
        self._turn = 0
        self._looked = threading.local()  # the file's version when this thread last looked

    def refresh(self) -> None:
        """Read the other processes on the file, and release those found dead."""
        rows = self._table.rows()
        peers = {row[0]: (row[3], row[4]) for row in rows if row[0] != self.id}
        with self._lock:
            self._peers = peers
        self.check()

    def check(self) -> None:
        """Release every peer whose lock is free: its process is gone."""
        for process, (_, lock) in list(self._peers.items()):
            if not _lockfile.is_held(pathlib.Path(lock)):
                self.release(process, lock)

    def alive(self, process: int) -> bool:
        """:returns: whether *process* lives; a dead one is released at once."""
        peer = self._peers.get(process)
        if peer is None:
            self.refresh()
            peer = self._peers.get(process)
            if peer is None:
                return False
        if _lockfile.is_held(pathlib.Path(peer[1])):
            return True
        self.release(process, peer[1])
        return False

    def release(self, process: int, lock: str) -> None:
        """Release dead *process*, whose lock file is *lock* (see the module doc)."""
        lost = self._table.leave(process)
        with self._lock:
            self._peers.pop(process, None)
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass
        if lost:
            _LOGGER.info("process %d on %s is gone: answering its RPCs", process, self._path)
        if self.handler is not None:
            self.handler.process_gone(process, lost)
        self.ring_peers(_doorbell.TASK)
        self.ring_self(_doorbell.TASK)

    def ring_peers(self, kind: bytes) -> None:
        """Ring every peer, starting with a different one each time (the first rung tends
        to be the first to take a task: the load is shared)."""
        peers = list(self._peers.values())
        if not peers:
            return
        self._turn = (self._turn + 1) % len(peers)
        gone = False
        for doorbell, _ in peers[self._turn :] + peers[: self._turn]:
            if self.doorbell is not None and not self.doorbell.ring(doorbell, kind):
                gone = True
        if gone:
            self.ring_self(_doorbell.PEERS)

    def current(self) -> list[int]:
        """:returns: the ids of the peers on the file now (read again from the file, since
        one may have joined an instant ago: its ring saying so may not be read yet; unless
        nothing was written to the file since this thread last looked)."""
        version = self._table.version()
        if getattr(self._looked, "version", None) != version:
            if self._table.ids() != {*self._peers, self.id}:
                self.refresh()
            self._looked.version = version
        return list(self._peers)

    def ring_self(self, kind: bytes) -> None:
        if self.doorbell is not None:
            self.doorbell.ring_self(kind)

    def ring(self, process: int, kind: bytes) -> None:
        """Ring *process* (this one or a peer, read again from the file if unknown)."""
        if process == self.id:
            self.ring_self(kind)
            return
        peer = self._peers.get(process)
        if peer is None:
            self.refresh()
            peer = self._peers.get(process)
        if peer is not None and self.doorbell is not None:
            if not self.doorbell.ring(peer[0], kind):
                self.ring_self(_doorbell.PEERS)

    def can_send(self, process: int) -> bool:
        """:returns: whether a datagram can be sent to *process* (a known peer)."""
        return process in self._peers and self.doorbell is not None

    def send(self, process: int, kind: bytes, header: dict[str, Any], body: bytes) -> bool:
        """Send a message by datagram to *process* (:meth:`._doorbell.Doorbell.send`).

        :returns: whether it went.
        """
        peer = self._peers.get(process)
        if peer is None or self.doorbell is None:
            return False
        return self.doorbell.send(peer[0], kind, header, body)
