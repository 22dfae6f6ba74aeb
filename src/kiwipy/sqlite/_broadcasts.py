"""Broadcasts between the processes on a SQLite file.

A broadcast is posted at once to every connection of the broker that sends it, and sent to
every other process known on the file in a datagram (:data:`._doorbell.ANNOUNCE`). One too
large for a datagram, or for a process whose doorbell could not take it (a full buffer), is
written to the ``broadcasts`` table instead (for that process, or for all), and the process
is rung to read it. Each process records how far it read, at most once a second (old rows
are deleted by :meth:`~._tables.BroadcastTable.broadcast`). Not durable: a process sees the
broadcasts sent after it joined; one sender's broadcasts reach a process in order unless
its doorbell overflowed.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from ..core._broker import Payload, Post
from . import _doorbell
from ._local import Connections, encoder
from ._peers import Peers
from ._tables import BroadcastTable

__all__ = ("Broadcasts",)

#: Seconds between two records of how far this process read.
_MARK_EVERY = 1.0


class Broadcasts:
    """The broadcasts of one broker; its locks are those of *connections*."""

    def __init__(self, table: BroadcastTable, connections: Connections, peers: Peers) -> None:
        self._table = table
        self._connections = connections
        self._peers = peers
        self._seen = 0
        self._marked = 0.0

    def start(self) -> None:
        """Start after the last broadcast in the file (on joining it)."""
        self._seen = self._table.last()

    def broadcast(self, payload: Payload) -> None:
        self._connections.check_open()
        assert payload.encoder is not None
        body, name = bytes(payload.data), payload.encoder.name
        header = {"e": name, "h": payload.headers}
        missed: list[Optional[int]] = [
            peer
            for peer in self._peers.current()
            if not self._peers.send(peer, _doorbell.ANNOUNCE, header, body)
        ]
        if missed:
            everyone = len(body) >= _doorbell.MAX_DATAGRAM - 256
            self._table.broadcast(
                self._peers.id, body, name, payload.headers, [None] if everyone else missed
            )
            self._peers.ring_peers(_doorbell.BROADCAST)
        with self._connections.lock:
            posts = [(c, c.on_broadcast, (payload,)) for c in self._connections.all()]
        self._connections.flush(posts)

    def receive(self, header: dict[str, Any], body: bytes) -> list[Post]:
        """:returns: the posts of a broadcast that came by datagram."""
        payload = Payload(body, encoder(header["e"]), header.get("h"))
        with self._connections.lock:
            return [(c, c.on_broadcast, (payload,)) for c in self._connections.all()]

    def take(self) -> None:
        """Post the broadcasts of other processes not seen yet (on the pump thread)."""
        rows = self._table.after(self._seen, self._peers.id)
        if not rows:
            return
        self._seen = rows[-1][0]
        with self._connections.lock:
            conns = self._connections.all()
        posts: list[Post] = []
        for _, origin, body, name, headers in rows:
            if origin == self._peers.id:
                continue  # posted to this broker's connections when sent
            payload = Payload(body, encoder(name), headers)
            posts.extend((c, c.on_broadcast, (payload,)) for c in conns)
        self._connections.flush(posts)
        now = time.monotonic()
        if now - self._marked >= _MARK_EVERY:
            self._marked = now
            self._table.mark_seen(self._peers.id, self._seen)
