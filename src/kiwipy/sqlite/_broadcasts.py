"""Broadcasts between the processes on a SQLite file.

A broadcast is posted at once to every connection of the broker that sends it, and written
to the ``broadcasts`` table for the others, rung to read it; each process records how far
it read (old rows are deleted by :meth:`~._tables.BroadcastTable.broadcast`). Not durable:
a process sees the broadcasts sent after it joined.
"""

from __future__ import annotations

from ..core._broker import Payload
from . import _doorbell
from ._local import Connections, Post, encoder
from ._peers import Peers
from ._tables import BroadcastTable

__all__ = ("Broadcasts",)


class Broadcasts:
    """The broadcasts of one broker; its locks are those of *connections*."""

    def __init__(self, table: BroadcastTable, connections: Connections, peers: Peers) -> None:
        self._table = table
        self._connections = connections
        self._peers = peers
        self._seen = 0

    def start(self) -> None:
        """Start after the last broadcast in the file (on joining it)."""
        self._seen = self._table.last()

    def broadcast(self, payload: Payload) -> None:
        self._connections.check_open()
        assert payload.encoder is not None
        self._table.broadcast(
            self._peers.id, bytes(payload.data), payload.encoder.name, payload.headers
        )
        self._peers.ring_peers(_doorbell.BROADCAST)
        with self._connections.lock:
            posts = [(c, c.on_broadcast, (payload,)) for c in self._connections.all()]
        self._connections.flush(posts)

    def take(self) -> None:
        """Post the broadcasts of other processes not seen yet (on the pump thread)."""
        rows = self._table.after(self._seen)
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
        self._table.mark_seen(self._peers.id, self._seen)
