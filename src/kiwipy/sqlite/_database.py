"""The SQLite file of the transport: its schema and its connections, free of threads and
wake-ups. The tables' statements are in :mod:`._tables` and :mod:`._task_tables`;
:class:`~._store.Store` puts them together.

Rules:

* WAL mode; every write is one ``BEGIN IMMEDIATE`` transaction (:meth:`Database.write`), so
  writers queue for the lock (up to ``busy_timeout``) instead of failing half-way, and
  readers never wait.
* Two connections per thread (closed once their thread has ended, when another thread
  opens one): a *durable* one (``synchronous=FULL`` by default) that only
  commits new tasks, and a *fast* one (``synchronous=NORMAL``) for everything else. In WAL
  mode the next durable commit makes every earlier commit durable too, and losing a fast
  commit to a power cut only ever redelivers a task (an ack, a claim) or loses a reply or an
  RPC, which RabbitMQ does not keep either.
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

__all__ = ("SCHEMA_VERSION", "Database", "Row", "dumps", "load_headers")

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
    sent REAL NOT NULL, target INTEGER);
"""


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


def load_headers(text: Optional[str]) -> Optional[dict[str, str]]:
    """:returns: the headers stored as *text*."""
    return None if text is None else dict(json.loads(text))


def dumps(headers: Optional[dict[str, str]]) -> Optional[str]:
    """:returns: *headers* as stored (``None`` when there are none)."""
    return None if not headers else json.dumps(headers)


def _close(conns: list[sqlite3.Connection]) -> None:
    for conn in conns:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


class Database:
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
        # every connection opened, by the thread it belongs to
        self._all: dict[threading.Thread, list[sqlite3.Connection]] = {}
        self._all_lock = threading.Lock()

    # Connections

    def _open(self, synchronous: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=0,  # waits for the lock are ours: see _retrying
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self.error(exc, "open") from exc
        self._retrying(conn, f"PRAGMA synchronous={synchronous}", "open")
        with self._all_lock:
            ended = [thread for thread in self._all if not thread.is_alive()]
            gone = [each for thread in ended for each in self._all.pop(thread)]
            self._all.setdefault(threading.current_thread(), []).append(conn)
        _close(gone)  # those of threads that ended (any thread may send): no leak of files
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
            conns = [each for per_thread in self._all.values() for each in per_thread]
            self._all = {}
        _close(conns)
        self._local = threading.local()

    def error(self, exc: sqlite3.Error, doing: str) -> exceptions.StorageError:
        return exceptions.StorageError(self.path, doing, exc)

    def _retrying(self, conn: sqlite3.Connection, sql: str, doing: str) -> None:
        """Execute *sql*, waiting while the file is busy (another writer holds its lock) for
        up to ``busy_timeout``: first 50 microseconds, doubling up to 2 ms between tries.
        SQLite's own busy handler sleeps 1, 2, 5, 10... ms, several times the tens of
        microseconds a write here holds the lock."""
        delay, deadline = 0.00005, 0.0
        while True:
            try:
                conn.execute(sql)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise self.error(exc, doing) from exc
                now = time.monotonic()
                deadline = deadline or now + self._busy_timeout
                if now >= deadline:
                    raise self.error(exc, doing) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.002)
            except sqlite3.Error as exc:
                raise self.error(exc, doing) from exc

    @contextlib.contextmanager
    def write(self, doing: str, durable: bool = False) -> Iterator[sqlite3.Connection]:
        conn = self._durable() if durable else self._fast()
        self._retrying(conn, "BEGIN IMMEDIATE", doing)
        try:
            yield conn
            self._retrying(conn, "COMMIT", doing)
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self.error(exc, doing) from exc
            raise

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        delay, deadline = 0.00005, 0.0
        while True:
            try:
                return self._fast().execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:  # busy only while the WAL is recovered
                now = time.monotonic()
                deadline = deadline or now + self._busy_timeout
                if ("locked" not in str(exc) and "busy" not in str(exc)) or now >= deadline:
                    raise self.error(exc, "read") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.002)
            except sqlite3.Error as exc:
                raise self.error(exc, "read") from exc

    def data_version(self) -> int:
        """:returns: SQLite's ``data_version`` on this thread's connection: a number that
        changes when another connection commits to the file (compare it only with numbers
        read on the same thread)."""
        return int(self.read("PRAGMA data_version")[0][0])

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
                    raise self.error(exc, "switch to WAL mode") from exc
                time.sleep(0.01)
            except sqlite3.Error as exc:
                raise self.error(exc, "open") from exc
        if str(mode).lower() != "wal":
            raise exceptions.StorageError(
                self.path, "switch to WAL mode", RuntimeError(f"journal_mode is {mode}")
            )
        with self.write("create the tables") as conn:
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

    def schema_version(self) -> Optional[int]:
        """:returns: the schema version the file records, ``None`` if it has no kiwipy
        tables (an empty file, or another application's database)."""
        if not self.read("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"):
            return None
        found = self.read("SELECT value FROM meta WHERE key='schema'")
        return int(found[0][0]) if found else None

    def integrity_check(self) -> str:
        return str(self.read("PRAGMA integrity_check")[0][0])
