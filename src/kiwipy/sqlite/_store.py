"""The SQL of the SQLite transport: the schema and every statement, free of threads and wake-ups.

Rules:

* WAL mode; every write is one ``BEGIN IMMEDIATE`` transaction, so writers queue for the
  lock (up to ``busy_timeout``) instead of failing half-way, and readers never wait.
* Two connections per thread: a *durable* one (``synchronous=FULL`` by default) that only
  commits new tasks, and a *fast* one (``synchronous=NORMAL``) for everything else. In WAL
  mode the next durable commit makes every earlier commit durable too, and losing a fast
  commit to a power cut only ever redelivers a task (an ack, a claim) or loses a reply or an
  RPC, which RabbitMQ does not keep either.
* A task row is ready (``owner`` NULL), out (``owner`` = the process holding it) or gone
  (deleted on ack, moved to ``dead_letters``). Its ``id`` is its publication order.
* Any SQLite error becomes :class:`~kiwipy.StorageError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Optional

from .. import exceptions

__all__ = ("SCHEMA_VERSION", "DeadLetter", "Row", "Store")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS processes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL, host TEXT NOT NULL, doorbell TEXT NOT NULL, lock TEXT NOT NULL,
    started REAL NOT NULL, seen_broadcast INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL, body BLOB NOT NULL, encoder TEXT NOT NULL, headers TEXT,
    correlation_id TEXT NOT NULL, reply_process INTEGER, reply_conn INTEGER,
    deadline REAL, expires REAL, created REAL NOT NULL,
    owner INTEGER, owner_conn INTEGER,
    deliveries INTEGER NOT NULL DEFAULT 0, cancelled INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks (queue, owner, id);
CREATE INDEX IF NOT EXISTS tasks_owner ON tasks (owner);
CREATE TABLE IF NOT EXISTS rejections (
    task INTEGER NOT NULL, consumer TEXT NOT NULL, PRIMARY KEY (task, consumer)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL, body BLOB NOT NULL, encoder TEXT NOT NULL, headers TEXT,
    correlation_id TEXT NOT NULL, reason TEXT NOT NULL, deliveries INTEGER NOT NULL,
    created REAL NOT NULL, died REAL NOT NULL);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, id);
CREATE TABLE IF NOT EXISTS consumers (
    process INTEGER NOT NULL, queue TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (process, queue)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rpc_bindings (
    key TEXT PRIMARY KEY, process INTEGER NOT NULL, conn INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rpc_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    process INTEGER NOT NULL, key TEXT NOT NULL, body BLOB, encoder TEXT NOT NULL,
    headers TEXT, correlation_id TEXT NOT NULL, reply_process INTEGER, reply_conn INTEGER,
    deadline REAL, cancels TEXT, taken INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS rpc_requests_process ON rpc_requests (process, taken);
CREATE INDEX IF NOT EXISTS rpc_requests_correlation ON rpc_requests (process, correlation_id);
CREATE TABLE IF NOT EXISTS replies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    process INTEGER NOT NULL, conn INTEGER NOT NULL, correlation_id TEXT NOT NULL,
    body BLOB NOT NULL, encoder TEXT NOT NULL, headers TEXT);
CREATE INDEX IF NOT EXISTS replies_process ON replies (process);
CREATE TABLE IF NOT EXISTS broadcasts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin INTEGER NOT NULL, body BLOB NOT NULL, encoder TEXT NOT NULL, headers TEXT,
    sent REAL NOT NULL);
"""

_TASK_COLUMNS = (
    "id, queue, body, encoder, headers, correlation_id, reply_process, reply_conn, deadline,"
    " expires, deliveries, cancelled"
)


class Row(NamedTuple):
    """A task or RPC request as read back (``queue`` is the RPC key for a request)."""

    id: int
    queue: str
    body: bytes
    encoder: str
    headers: Optional[dict[str, str]]
    correlation_id: str
    reply_process: Optional[int]
    reply_conn: Optional[int]
    deadline: Optional[float]
    expires: Optional[float] = None
    deliveries: int = 0
    cancelled: bool = False
    cancels: Optional[str] = None


class DeadLetter(NamedTuple):
    id: int
    queue: str
    body: bytes
    encoder: str
    correlation_id: str
    reason: str
    deliveries: int
    died: float


def _headers(text: Optional[str]) -> Optional[dict[str, str]]:
    return None if text is None else dict(json.loads(text))


def _task_row(values: Sequence[Any]) -> Row:
    (id_, queue, body, encoder, headers, cid, rproc, rconn, deadline, expires, count, cancelled) = (
        values
    )
    return Row(
        id_, queue, body, encoder, _headers(headers), cid, rproc, rconn, deadline, expires,
        count, bool(cancelled),
    )  # fmt: skip


class Store:
    """The database file at *path*, opened per thread.

    :param synchronous: the ``synchronous`` level of task commits (``'full'`` or
        ``'normal'``).
    :param busy_timeout: seconds a write waits for the file's write lock.
    """

    def __init__(self, path: str, synchronous: str = "full", busy_timeout: float = 10.0) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()

    # Connections

    def _open(self, synchronous: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA synchronous={synchronous}")
        except sqlite3.Error as exc:
            raise self._error(exc, "open") from exc
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _fast(self) -> sqlite3.Connection:
        conn: Optional[sqlite3.Connection] = getattr(self._local, "fast", None)
        if conn is None:
            conn = self._local.fast = self._open("normal")
        return conn

    def _durable(self) -> sqlite3.Connection:
        conn: Optional[sqlite3.Connection] = getattr(self._local, "durable", None)
        if conn is None:
            conn = self._local.durable = self._open(self._synchronous)
        return conn

    def close(self) -> None:
        """Close every connection this store opened, on any thread."""
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    def _error(self, exc: sqlite3.Error, doing: str) -> exceptions.StorageError:
        return exceptions.StorageError(self.path, doing, exc)

    @contextlib.contextmanager
    def _write(self, doing: str, durable: bool = False) -> Iterator[sqlite3.Connection]:
        conn = self._durable() if durable else self._fast()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc, doing) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc, doing) from exc
            raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._fast().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, "read") from exc

    def initialise(self) -> None:
        """Put the file in WAL mode and create the tables (idempotent, safe to race)."""
        conn = self._fast()
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise self._error(exc, "switch to WAL mode") from exc
                time.sleep(0.01)
            except sqlite3.Error as exc:
                raise self._error(exc, "open") from exc
        if str(mode).lower() != "wal":
            raise exceptions.StorageError(
                self.path, "switch to WAL mode", RuntimeError(f"journal_mode is {mode}")
            )
        with self._write("create the tables") as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            found = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if found is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(found[0]) != SCHEMA_VERSION:
                raise exceptions.StorageError(
                    self.path,
                    "open",
                    RuntimeError(f"schema version {found[0]}; this kiwipy reads {SCHEMA_VERSION}"),
                )

    # Processes

    def join(self, pid: int, host: str, doorbell: str, lock: str) -> int:
        """:returns: the id of a new process row (it has seen every broadcast so far)."""
        with self._write("register this process") as conn:
            seen = conn.execute("SELECT COALESCE(MAX(id), 0) FROM broadcasts").fetchone()[0]
            cursor = conn.execute(
                "INSERT INTO processes (pid, host, doorbell, lock, started, seen_broadcast)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (pid, host, doorbell, lock, time.time(), seen),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def processes(self) -> list[tuple[int, int, str, str, str, float]]:
        """:returns: ``(id, pid, host, doorbell, lock, started)`` of every process row."""
        return self._read("SELECT id, pid, host, doorbell, lock, started FROM processes")

    def consumers(self) -> list[tuple[int, str, int]]:
        """:returns: ``(process, queue, count)`` of every registered task consumer."""
        return self._read("SELECT process, queue, count FROM consumers ORDER BY process, queue")

    def rpc_bindings(self) -> list[tuple[str, int]]:
        """:returns: ``(identifier, process)`` of every bound RPC identifier."""
        return self._read("SELECT key, process FROM rpc_bindings ORDER BY process, key")

    def schema_version(self) -> Optional[int]:
        """:returns: the schema version the file records, ``None`` if it has no kiwipy
        tables (an empty file, or another application's database)."""
        if not self._read("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"):
            return None
        found = self._read("SELECT value FROM meta WHERE key='schema'")
        return int(found[0][0]) if found else None

    def leave(self, process: int) -> list[tuple[int, int, str, int, str]]:
        """Remove *process* and give back all it held: its tasks go back to their queues,
        RPC requests it did not answer are returned (to be answered ``lost``).

        :returns: the unanswered requests as ``(reply_process, reply_conn, correlation_id,
            id, encoder)``; empty if the process row was gone already.
        """
        with self._write("release a process") as conn:
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

    # Tasks

    def publish(self, queue: str, rows: Sequence[tuple[Any, ...]]) -> list[int]:
        """Queue tasks, each ``(body, encoder, headers, correlation_id, reply_process,
        reply_conn, deadline, expires)``, in one durable transaction.

        :returns: their ids, in order.
        """
        now = time.time()
        ids: list[int] = []
        with self._write("queue a task", durable=True) as conn:
            for body, encoder, headers, cid, rproc, rconn, deadline, expires in rows:
                cursor = conn.execute(
                    "INSERT INTO tasks (queue, body, encoder, headers, correlation_id,"
                    " reply_process, reply_conn, deadline, expires, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (queue, body, encoder, _dumps(headers), cid, rproc, rconn, deadline,
                     expires, now),
                )  # fmt: skip
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
        return ids

    def claim(self, queue: str, process: int, conn_id: int, consumer: str, limit: int) -> list[Row]:
        """Take up to *limit* ready tasks of *queue*, oldest first, skipping those *consumer*
        rejected, for connection *conn_id* of *process*."""
        if not self._read(
            "SELECT 1 FROM tasks WHERE queue=? AND owner IS NULL LIMIT 1", (queue,)
        ):  # nothing ready: no write lock taken
            return []
        with self._write("take a task") as conn:
            values = conn.execute(
                "UPDATE tasks SET owner=?, owner_conn=?, deliveries=deliveries+1"
                " WHERE id IN (SELECT id FROM tasks WHERE queue=? AND owner IS NULL"
                " AND id NOT IN (SELECT task FROM rejections WHERE consumer=?)"
                f" ORDER BY id LIMIT ?) RETURNING {_TASK_COLUMNS}",
                (process, conn_id, queue, consumer, limit),
            ).fetchall()
        rows = [_task_row(v) for v in values]
        rows.sort(key=lambda row: row.id)
        return rows

    def ack(self, task: int, process: int) -> None:
        with self._write("acknowledge a task") as conn:
            conn.execute("DELETE FROM tasks WHERE id=? AND owner=?", (task, process))
            conn.execute("DELETE FROM rejections WHERE task=?", (task,))

    def requeue(self, task: int, process: int, rejected_by: Optional[str] = None) -> None:
        with self._write("give a task back") as conn:
            conn.execute(
                "UPDATE tasks SET owner=NULL, owner_conn=NULL WHERE id=? AND owner=?",
                (task, process),
            )
            if rejected_by is not None:
                conn.execute("INSERT OR IGNORE INTO rejections VALUES (?, ?)", (task, rejected_by))

    def requeue_connection(self, process: int, conn_id: int) -> int:
        """Give back every task connection *conn_id* holds. :returns: how many."""
        with self._write("give tasks back") as conn:
            cursor = conn.execute(
                "UPDATE tasks SET owner=NULL, owner_conn=NULL WHERE owner=? AND owner_conn=?",
                (process, conn_id),
            )
            return cursor.rowcount

    def dead_letter(self, task: int, process: Optional[int], reason: str) -> None:
        """Move the task to the dead letters (*process* None: whoever holds it)."""
        with self._write("dead-letter a task") as conn:
            owner = "owner IS NOT NULL" if process is None else "owner=?"
            params: tuple[Any, ...] = (task,) if process is None else (task, process)
            conn.execute(
                "INSERT INTO dead_letters (queue, body, encoder, headers, correlation_id,"
                " reason, deliveries, created, died) SELECT queue, body, encoder, headers,"
                f" correlation_id, ?, deliveries, created, ? FROM tasks WHERE id=? AND {owner}",
                (reason, time.time(), *params),
            )
            conn.execute(f"DELETE FROM tasks WHERE id=? AND {owner}", params)
            conn.execute("DELETE FROM rejections WHERE task=?", (task,))

    def cancel_task(self, task: int) -> None:
        with self._write("cancel a task") as conn:
            conn.execute("UPDATE tasks SET cancelled=1 WHERE id=?", (task,))

    def set_consumers(self, process: int, queue: str, count: int) -> None:
        with self._write("register a consumer") as conn:
            if count:
                conn.execute(
                    "INSERT OR REPLACE INTO consumers VALUES (?, ?, ?)", (process, queue, count)
                )
            else:
                conn.execute("DELETE FROM consumers WHERE process=? AND queue=?", (process, queue))

    def queue_stats(self, queue: Optional[str] = None) -> dict[str, tuple[int, int, int, int]]:
        """:returns: queue name -> ``(ready, unsettled, consumers, dead letters)``."""
        where, params = ("WHERE queue=?", (queue,)) if queue is not None else ("", ())
        stats: dict[str, list[int]] = {}
        for name, ready, out in self._read(
            "SELECT queue, SUM(owner IS NULL), SUM(owner IS NOT NULL) FROM tasks"
            f" {where} GROUP BY queue",
            params,
        ):
            stats.setdefault(name, [0, 0, 0, 0])[0:2] = [ready, out]
        for name, count in self._read(
            f"SELECT queue, SUM(count) FROM consumers {where} GROUP BY queue", params
        ):
            stats.setdefault(name, [0, 0, 0, 0])[2] = count
        for name, count in self._read(
            f"SELECT queue, COUNT(*) FROM dead_letters {where} GROUP BY queue", params
        ):
            stats.setdefault(name, [0, 0, 0, 0])[3] = count
        if queue is not None and queue not in stats:
            stats[queue] = [0, 0, 0, 0]
        return {name: (v[0], v[1], v[2], v[3]) for name, v in sorted(stats.items())}

    def dead_letters(self, queue: Optional[str] = None) -> list[DeadLetter]:
        where, params = ("WHERE queue=?", (queue,)) if queue is not None else ("", ())
        return [
            DeadLetter(*values)
            for values in self._read(
                "SELECT id, queue, body, encoder, correlation_id, reason, deliveries, died"
                f" FROM dead_letters {where} ORDER BY id",
                params,
            )
        ]

    def requeue_dead(self, ids: Sequence[int]) -> int:
        """Put dead letters back at the end of their queues. :returns: how many."""
        moved = 0
        with self._write("requeue dead letters", durable=True) as conn:
            for id_ in ids:
                cursor = conn.execute(
                    "INSERT INTO tasks (queue, body, encoder, headers, correlation_id, created)"
                    " SELECT queue, body, encoder, headers, correlation_id, ? FROM dead_letters"
                    " WHERE id=?",
                    (time.time(), id_),
                )
                conn.execute("DELETE FROM dead_letters WHERE id=?", (id_,))
                moved += cursor.rowcount
        return moved

    def delete_dead(self, ids: Sequence[int]) -> int:
        with self._write("delete dead letters") as conn:
            return sum(
                conn.execute("DELETE FROM dead_letters WHERE id=?", (id_,)).rowcount for id_ in ids
            )

    def take_ready(self, queue: str, limit: int, after: int = 0) -> list[Row]:
        """:returns: up to *limit* ready tasks of *queue* with an id above *after*, oldest
        first, read without taking them."""
        return [
            _task_row(values)
            for values in self._read(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE queue=? AND owner IS NULL AND id > ?"
                " ORDER BY id LIMIT ?",
                (queue, after, limit),
            )
        ]

    def park_tasks(self, ids: Sequence[int], reason: str) -> int:
        """Move ready tasks by id to the dead letters with *reason* (those taken meanwhile
        stay). :returns: how many."""
        moved = 0
        with self._write("park tasks") as conn:
            for id_ in ids:
                cursor = conn.execute(
                    "INSERT INTO dead_letters (queue, body, encoder, headers, correlation_id,"
                    " reason, deliveries, created, died) SELECT queue, body, encoder, headers,"
                    " correlation_id, ?, deliveries, created, ? FROM tasks"
                    " WHERE id=? AND owner IS NULL",
                    (reason, time.time(), id_),
                )
                conn.execute("DELETE FROM tasks WHERE id=? AND owner IS NULL", (id_,))
                conn.execute("DELETE FROM rejections WHERE task=?", (id_,))
                moved += cursor.rowcount
        return moved

    def delete_tasks(self, ids: Sequence[int]) -> int:
        """Delete ready tasks by id (those taken meanwhile stay). :returns: how many."""
        with self._write("remove moved tasks") as conn:
            return sum(
                conn.execute("DELETE FROM tasks WHERE id=? AND owner IS NULL", (id_,)).rowcount
                for id_ in ids
            )

    # RPC

    def bind(self, key: str, process: int, conn_id: int) -> Optional[int]:
        """Bind RPC *key* to *process*. :returns: the process already holding it, if any."""
        with self._write("bind an RPC identifier") as conn:
            holder = conn.execute("SELECT process FROM rpc_bindings WHERE key=?", (key,)).fetchone()
            if holder is not None:
                return int(holder[0])
            conn.execute("INSERT INTO rpc_bindings VALUES (?, ?, ?)", (key, process, conn_id))
            return None

    def unbind(self, key: str, process: int) -> None:
        with self._write("unbind an RPC identifier") as conn:
            conn.execute("DELETE FROM rpc_bindings WHERE key=? AND process=?", (key, process))

    def holder(self, key: str) -> Optional[int]:
        found = self._read("SELECT process FROM rpc_bindings WHERE key=?", (key,))
        return None if not found else int(found[0][0])

    def send_request(self, holder: int, key: str, values: tuple[Any, ...]) -> bool:
        """Queue an RPC request for *holder* of *key*: ``(body, encoder, headers,
        correlation_id, reply_process, reply_conn, deadline, cancels)``.

        :returns: ``False`` if *holder* no longer holds *key*.
        """
        body, encoder, headers, cid, rproc, rconn, deadline, cancels = values
        with self._write("send an RPC") as conn:
            cursor = conn.execute(
                "INSERT INTO rpc_requests (process, key, body, encoder, headers, correlation_id,"
                " reply_process, reply_conn, deadline, cancels) SELECT ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ? WHERE EXISTS (SELECT 1 FROM rpc_bindings WHERE key=? AND process=?)",
                (holder, key, body, encoder, _dumps(headers), cid, rproc, rconn, deadline,
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
        with self._write("take RPC requests") as conn:
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
            Row(id_, key, body, enc, _headers(hdr), cid, rp, rc, dl, cancels=cancels)
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
        with self._write("send a reply") as conn:
            if answered is not None:
                conn.execute(
                    "DELETE FROM rpc_requests WHERE process=? AND correlation_id=?", answered
                )
            cursor = conn.execute(
                "INSERT INTO replies (process, conn, correlation_id, body, encoder, headers)"
                " SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM processes WHERE id=?)",
                (process, conn_id, cid, body, encoder, _dumps(headers), process),
            )
            return cursor.rowcount > 0

    def take_replies(self, process: int) -> list[tuple[int, int, str, bytes, str, Any]]:
        """:returns: and deletes the replies for *process*: ``(id, conn, correlation_id,
        body, encoder, headers)``, oldest first."""
        with self._write("take replies") as conn:
            values = conn.execute(
                "DELETE FROM replies WHERE process=? RETURNING id, conn, correlation_id, body,"
                " encoder, headers",
                (process,),
            ).fetchall()
        values.sort(key=lambda v: v[0])
        return [(i, c, cid, b, e, _headers(h)) for i, c, cid, b, e, h in values]

    # Broadcasts

    def broadcast(self, origin: int, body: bytes, encoder: str, headers: Any) -> None:
        with self._write("send a broadcast") as conn:
            cursor = conn.execute(
                "INSERT INTO broadcasts (origin, body, encoder, headers, sent)"
                " VALUES (?, ?, ?, ?, ?)",
                (origin, body, encoder, _dumps(headers), time.time()),
            )
            if cursor.lastrowid is not None and cursor.lastrowid % 64 == 0:
                # seen by every process, or a minute old (a live pump reads in milliseconds)
                conn.execute(
                    "DELETE FROM broadcasts WHERE id <= (SELECT MIN(seen_broadcast)"
                    " FROM processes) OR sent < ?",
                    (time.time() - 60,),
                )

    def broadcasts_after(
        self, seen: int
    ) -> list[tuple[int, int, bytes, str, Optional[dict[str, str]]]]:
        """:returns: ``(id, origin, body, encoder, headers)`` of the broadcasts after *seen*."""
        return [
            (id_, origin, body, enc, _headers(hdr))
            for id_, origin, body, enc, hdr in self._read(
                "SELECT id, origin, body, encoder, headers FROM broadcasts WHERE id > ?"
                " ORDER BY id",
                (seen,),
            )
        ]

    def last_broadcast(self) -> int:
        return int(self._read("SELECT COALESCE(MAX(id), 0) FROM broadcasts")[0][0])

    def mark_seen(self, process: int, seen: int) -> None:
        with self._write("record broadcasts seen") as conn:
            conn.execute("UPDATE processes SET seen_broadcast=? WHERE id=?", (seen, process))

    def integrity_check(self) -> str:
        return str(self._read("PRAGMA integrity_check")[0][0])


def _dumps(headers: Optional[dict[str, str]]) -> Optional[str]:
    return None if not headers else json.dumps(headers)
