"""The statements on the tables of processes (``processes``, ``consumers``), of RPCs
(``rpc_bindings``, ``rpc_requests``, ``replies``) and of ``broadcasts``. Each write is one
transaction of :meth:`~._database.Database.write` on the fast connection: none of these
rows needs to survive a power cut (the processes are gone then, and RabbitMQ does not keep
RPCs or broadcasts either).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Optional

from ._database import Database, Row, dumps, load_headers

__all__ = ("BroadcastTable", "ProcessTable", "RpcTables")


class ProcessTable:
    """The processes on the file and the task consumers each registered."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def join(self, pid: int, host: str, doorbell: str, lock: str) -> int:
        """:returns: the id of a new process row (it has seen every broadcast so far)."""
        with self._db.write("register this process") as conn:
            seen = conn.execute("SELECT COALESCE(MAX(id), 0) FROM broadcasts").fetchone()[0]
            cursor = conn.execute(
                "INSERT INTO processes (pid, host, doorbell, lock, started, seen_broadcast)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (pid, host, doorbell, lock, time.time(), seen),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def rows(self) -> list[tuple[int, int, str, str, str, float]]:
        """:returns: ``(id, pid, host, doorbell, lock, started)`` of every process row."""
        return self._db.read("SELECT id, pid, host, doorbell, lock, started FROM processes")

    def version(self) -> int:
        """:returns: a number that changes when another connection writes to the file (per
        thread: :meth:`~._database.Database.data_version`)."""
        return self._db.data_version()

    def ids(self) -> set[int]:
        """:returns: the id of every process row."""
        return {row[0] for row in self._db.read("SELECT id FROM processes")}

    def consumers(self) -> list[tuple[int, str, int]]:
        """:returns: ``(process, queue, count)`` of every registered task consumer."""
        return self._db.read("SELECT process, queue, count FROM consumers ORDER BY process, queue")

    def consuming(self, queue: str) -> int:
        """:returns: how many processes consume *queue*."""
        return int(self._db.read("SELECT COUNT(*) FROM consumers WHERE queue=?", (queue,))[0][0])

    def set_consumers(self, process: int, queue: str, count: int) -> None:
        with self._db.write("register a consumer") as conn:
            if count:
                conn.execute(
                    "INSERT OR REPLACE INTO consumers VALUES (?, ?, ?)", (process, queue, count)
                )
            else:
                conn.execute("DELETE FROM consumers WHERE process=? AND queue=?", (process, queue))

    def leave(self, process: int) -> list[tuple[int, int, str, int, str]]:
        """Remove *process* and give back all it held: its tasks go back to their queues,
        RPC requests it did not answer are returned (to be answered ``lost``).

        :returns: the unanswered requests as ``(reply_process, reply_conn, correlation_id,
            id, encoder)``; empty if the process row was gone already.
        """
        with self._db.write("release a process") as conn:
            if conn.execute("SELECT 1 FROM processes WHERE id=?", (process,)).fetchone() is None:
                return []
            lost = conn.execute(
                "SELECT reply_process, reply_conn, correlation_id, id, encoder FROM rpc_requests"
                " WHERE process=? AND reply_process IS NOT NULL AND cancels IS NULL",
                (process,),
            ).fetchall()
            conn.execute("UPDATE tasks SET owner=NULL, owner_conn=NULL WHERE owner=?", (process,))
            for table in ("rpc_bindings", "rpc_requests", "replies", "consumers"):
                conn.execute(f"DELETE FROM {table} WHERE process=?", (process,))
            conn.execute("DELETE FROM processes WHERE id=?", (process,))
            return lost


class RpcTables:
    """RPC identifiers bound to processes, requests queued for them, and replies."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def bind(self, key: str, process: int, conn_id: int) -> Optional[int]:
        """Bind RPC *key* to *process*. :returns: the process already holding it, if any."""
        with self._db.write("bind an RPC identifier") as conn:
            holder = conn.execute("SELECT process FROM rpc_bindings WHERE key=?", (key,)).fetchone()
            if holder is not None:
                return int(holder[0])
            conn.execute("INSERT INTO rpc_bindings VALUES (?, ?, ?)", (key, process, conn_id))
            return None

    def unbind(self, key: str, process: int) -> None:
        with self._db.write("unbind an RPC identifier") as conn:
            conn.execute("DELETE FROM rpc_bindings WHERE key=? AND process=?", (key, process))

    def holder(self, key: str) -> Optional[int]:
        found = self._db.read("SELECT process FROM rpc_bindings WHERE key=?", (key,))
        return None if not found else int(found[0][0])

    def bindings(self) -> list[tuple[str, int]]:
        """:returns: ``(identifier, process)`` of every bound RPC identifier."""
        return self._db.read("SELECT key, process FROM rpc_bindings ORDER BY process, key")

    def send_request(self, holder: int, key: str, values: tuple[Any, ...]) -> bool:
        """Queue an RPC request for *holder* of *key*: ``(body, encoder, headers,
        correlation_id, reply_process, reply_conn, deadline, cancels)``.

        :returns: ``False`` if *holder* no longer holds *key*.
        """
        body, encoder, headers, cid, rproc, rconn, deadline, cancels = values
        with self._db.write("send an RPC") as conn:
            cursor = conn.execute(
                "INSERT INTO rpc_requests (process, key, body, encoder, headers, correlation_id,"
                " reply_process, reply_conn, deadline, cancels) SELECT ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ? WHERE EXISTS (SELECT 1 FROM rpc_bindings WHERE key=? AND process=?)",
                (holder, key, body, encoder, dumps(headers), cid, rproc, rconn, deadline,
                 cancels, key, holder),
            )  # fmt: skip
            return cursor.rowcount > 0

    def take_requests(self, process: int) -> list[Row]:
        """:returns: the RPC requests waiting for *process*, marked taken (a cancel is
        deleted: nothing answers it); requests taken whose deadline passed a minute ago
        (their handler was cut short and did not answer) are deleted."""
        columns = (
            "id, key, body, encoder, headers, correlation_id, reply_process, reply_conn,"
            " deadline, cancels"
        )
        with self._db.write("take RPC requests") as conn:
            values = conn.execute(
                "DELETE FROM rpc_requests WHERE process=? AND taken=0 AND cancels IS NOT NULL"
                f" RETURNING {columns}",
                (process,),
            ).fetchall()
            values += conn.execute(
                f"UPDATE rpc_requests SET taken=1 WHERE process=? AND taken=0 RETURNING {columns}",
                (process,),
            ).fetchall()
            conn.execute(
                "DELETE FROM rpc_requests WHERE process=? AND taken=1 AND deadline < ?",
                (process, time.time() - 60),
            )
        rows = [
            Row(id_, key, body, enc, load_headers(hdr), cid, rp, rc, dl, cancels=cancels)
            for id_, key, body, enc, hdr, cid, rp, rc, dl, cancels in values
        ]
        rows.sort(key=lambda row: row.id)
        return rows

    def reply(
        self,
        values: tuple[int, int, str, bytes, str, Optional[dict[str, str]]],
        answered: Optional[tuple[int, str]] = None,
    ) -> bool:
        """Store a reply ``(process, conn, correlation_id, body, encoder, headers)`` for a
        live *process*; *answered*: ``(process, correlation_id)`` of the RPC request it
        finally answers, deleted in the same transaction.

        :returns: whether the reply was stored (its process is alive).
        """
        process, conn_id, cid, body, encoder, headers = values
        with self._db.write("send a reply") as conn:
            if answered is not None:
                conn.execute(
                    "DELETE FROM rpc_requests WHERE process=? AND correlation_id=?", answered
                )
            cursor = conn.execute(
                "INSERT INTO replies (process, conn, correlation_id, body, encoder, headers)"
                " SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM processes WHERE id=?)",
                (process, conn_id, cid, body, encoder, dumps(headers), process),
            )
            return cursor.rowcount > 0

    def take_replies(self, process: int) -> list[tuple[int, int, str, bytes, str, Any]]:
        """:returns: and deletes the replies for *process*: ``(id, conn, correlation_id,
        body, encoder, headers)``, oldest first."""
        with self._db.write("take replies") as conn:
            values = conn.execute(
                "DELETE FROM replies WHERE process=? RETURNING id, conn, correlation_id, body,"
                " encoder, headers",
                (process,),
            ).fetchall()
        values.sort(key=lambda v: v[0])
        return [(i, c, cid, b, e, load_headers(h)) for i, c, cid, b, e, h in values]


class BroadcastTable:
    """Broadcasts, and how far each process read them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def broadcast(
        self,
        origin: int,
        body: bytes,
        encoder: str,
        headers: Any,
        targets: Sequence[Optional[int]] = (None,),
    ) -> None:
        """Store a broadcast for every process (a target ``None``) or for each of
        *targets*."""
        with self._db.write("send a broadcast") as conn:
            for target in targets:
                cursor = conn.execute(
                    "INSERT INTO broadcasts (origin, body, encoder, headers, sent, target)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (origin, body, encoder, dumps(headers), time.time(), target),
                )
            if cursor.lastrowid is not None and cursor.lastrowid % 64 == 0:
                # seen by every process, or a minute old (a live pump reads in milliseconds)
                conn.execute(
                    "DELETE FROM broadcasts WHERE id <= (SELECT MIN(seen_broadcast)"
                    " FROM processes) OR sent < ?",
                    (time.time() - 60,),
                )

    def after(
        self, seen: int, process: int
    ) -> list[tuple[int, int, bytes, str, Optional[dict[str, str]]]]:
        """:returns: ``(id, origin, body, encoder, headers)`` of the broadcasts after *seen*
        for every process or for *process*."""
        return [
            (id_, origin, body, enc, load_headers(hdr))
            for id_, origin, body, enc, hdr in self._db.read(
                "SELECT id, origin, body, encoder, headers FROM broadcasts WHERE id > ?"
                " AND (target IS NULL OR target = ?) ORDER BY id",
                (seen, process),
            )
        ]

    def last(self) -> int:
        return int(self._db.read("SELECT COALESCE(MAX(id), 0) FROM broadcasts")[0][0])

    def mark_seen(self, process: int, seen: int) -> None:
        with self._db.write("record broadcasts seen") as conn:
            conn.execute("UPDATE processes SET seen_broadcast=? WHERE id=?", (seen, process))
