"""The local side of a :class:`~._broker.SqliteBroker`: the connections of this process's
communicators, and posting to their loops; shared by the broker's components
(:mod:`._peers`, :mod:`._rpc`, :mod:`._broadcasts`, :mod:`._tasks`).

Rules:

* All local state of a broker (connections, consumers, RPC callbacks, unsettled
  deliveries) is guarded by the one :attr:`Connections.lock`, never held while user code
  runs or while waiting for a loop.
* A connection whose loop is closed (its communicator is gone) is closed on the next post
  to it, through the ``on_lost`` callback the broker gives.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, NamedTuple, Optional

from .. import encoders, exceptions
from ..core._broker import Connection, Message, Post, post

__all__ = ("Address", "Connections", "encoder", "message_values")


class Address(NamedTuple):
    """Where replies go when their requester is in another process."""

    process: int
    conn: int


def encoder(name: str) -> encoders.Encoder:
    """:returns: the encoder called *name*; YAML for a custom one (the receiving
    communicator decodes with its own)."""
    try:
        return encoders.get_encoder(name)
    except ValueError:
        return encoders.YAML


class Connections:
    """The open connections of one broker, numbered (a reply's address names one).

    :param on_lost: called (without the lock) with a connection whose loop is closed.
    """

    def __init__(self, on_lost: Callable[[Connection], None]) -> None:
        self.lock = threading.Lock()
        self.closed = False
        self._on_lost = on_lost
        self._conns: dict[int, Connection] = {}
        self._ids: dict[Connection, int] = {}
        self._next = 0

    def add(self, connection: Connection) -> None:
        with self.lock:
            if self.closed:
                raise exceptions.CommunicatorClosed("the SQLite broker was closed")
            self._next += 1
            self._conns[self._next] = connection
            self._ids[connection] = self._next

    def remove(self, connection: Connection) -> tuple[int, bool]:
        """Forget *connection* (the lock held). :returns: its number, and whether it was
        the last."""
        conn_id = self._ids.pop(connection)
        del self._conns[conn_id]
        return conn_id, not self._conns

    def get(self, conn_id: int) -> Optional[Connection]:
        return self._conns.get(conn_id)

    def id_of(self, connection: Optional[object]) -> Optional[int]:
        """:returns: the number of *connection*, ``None`` if it is not one of these."""
        return self._ids.get(connection) if isinstance(connection, Connection) else None

    def all(self) -> list[Connection]:
        """:returns: the open connections (the lock held or not)."""
        return list(self._conns.values())

    def reply_to(self, own: int, process: Optional[int], conn: Optional[int]) -> Optional[object]:
        """:returns: where a reply to connection *conn* of *process* goes: the connection
        itself when *process* is this one (*own*) and it is still open."""
        if process is None or conn is None:
            return None
        if process == own:
            return self._conns.get(conn, Address(process, conn))
        return Address(process, conn)

    def check_open(self) -> None:
        if self.closed:
            raise exceptions.CommunicatorClosed("the SQLite broker was closed")

    @staticmethod
    def check(connection: Connection) -> None:
        if connection.closed:
            raise exceptions.CommunicatorClosed

    def flush(self, posts: list[Post]) -> bool:
        """Post each call to its connection's loop. :returns: whether every loop took it."""
        lost = post(posts)
        for connection in lost:
            self._on_lost(connection)
        return not lost


def message_values(message: Message, process: int, conn_id: Optional[int]) -> tuple[Any, ...]:
    """:returns: *message* as a task row's values ``(body, encoder, headers, correlation_id,
    reply_process, reply_conn, deadline, expires)`` (see
    :meth:`~._task_tables.TaskTable.publish`), its reply to go to connection *conn_id* of
    *process*."""
    payload = message.payload
    if message.cancels is not None:  # a cancel: no body
        body, encoder_name = b"", "none"
    elif payload.encoder is None or not isinstance(payload.data, (bytes, bytearray)):
        raise TypeError("the SQLite transport stores encoded messages only")
    else:
        body, encoder_name = bytes(payload.data), payload.encoder.name
    return (
        body,
        encoder_name,
        payload.headers,
        message.correlation_id,
        process if isinstance(message.reply_to, Connection) else None,
        conn_id,
        message.deadline,
        None,
    )
