"""The statements on the ``tasks`` table and those next to it (``rejections``,
``dead_letters``): what brokers do with tasks (:class:`TaskTable`) and what the operator's
tools read and move (:class:`QueueTable`).

A task row is ready (``owner`` NULL), out (``owner`` = the process holding it) or gone
(deleted on ack, moved to ``dead_letters``). Its ``id`` is its publication order. Every
write is one transaction of :meth:`~._database.Database.write`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

from ._database import Database, Row, dumps, load_headers

__all__ = ("DeadLetter", "QueueTable", "TaskTable")

_TASK_COLUMNS = (
    "id, queue, body, encoder, headers, correlation_id, reply_process, reply_conn, deadline,"
    " expires, deliveries, cancelled"
)
#: Task ids per statement of a batch (SQLite allows 999 parameters in older builds).
_CHUNK = 500


class DeadLetter(NamedTuple):
    id: int
    queue: str
    body: bytes
    encoder: str
    correlation_id: str
    reason: str
    deliveries: int
    died: float


def task_row(values: Sequence[Any]) -> Row:
    (id_, queue, body, encoder, headers, cid, rproc, rconn, deadline, expires, count, cancelled) = (
        values
    )
    return Row(
        id_, queue, body, encoder, load_headers(headers), cid, rproc, rconn, deadline, expires,
        count, bool(cancelled),
    )  # fmt: skip


class TaskTable:
    """A broker's tasks: publish, claim, settle (ack, requeue, dead-letter), cancel."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def publish(self, queue: str, rows: Sequence[tuple[Any, ...]]) -> list[int]:
        """Queue tasks, each ``(body, encoder, headers, correlation_id, reply_process,
        reply_conn, deadline, expires)``, in one durable transaction.

        :returns: their ids, in order.
        """
        now = time.time()
        ids: list[int] = []
        with self._db.write("queue a task", durable=True) as conn:
            for body, encoder, headers, cid, rproc, rconn, deadline, expires in rows:
                cursor = conn.execute(
                    "INSERT INTO tasks (queue, body, encoder, headers, correlation_id,"
                    " reply_process, reply_conn, deadline, expires, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (queue, body, encoder, dumps(headers), cid, rproc, rconn, deadline,
                     expires, now),
                )  # fmt: skip
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
        return ids

    def claim(self, queue: str, process: int, conn_id: int, consumer: str, limit: int) -> list[Row]:
        """Take up to *limit* ready tasks of *queue*, oldest first, skipping those *consumer*
        rejected, for connection *conn_id* of *process*."""
        if not self._db.read(
            "SELECT 1 FROM tasks WHERE queue=? AND owner IS NULL LIMIT 1", (queue,)
        ):  # nothing ready: no write lock taken
            return []
        with self._db.write("take a task") as conn:
            values = conn.execute(
                "UPDATE tasks SET owner=?, owner_conn=?, deliveries=deliveries+1"
                " WHERE id IN (SELECT id FROM tasks WHERE queue=? AND owner IS NULL"
                " AND id NOT IN (SELECT task FROM rejections WHERE consumer=?)"
                f" ORDER BY id LIMIT ?) RETURNING {_TASK_COLUMNS}",
                (process, conn_id, queue, consumer, limit),
            ).fetchall()
        rows = [task_row(v) for v in values]
        rows.sort(key=lambda row: row.id)
        return rows

    def ack(self, tasks: Sequence[int], process: int) -> None:
        """Remove the *tasks* *process* holds, in one transaction."""
        with self._db.write("acknowledge tasks") as conn:
            for start in range(0, len(tasks), _CHUNK):
                chunk = tasks[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    f"DELETE FROM tasks WHERE owner=? AND id IN ({marks})", (process, *chunk)
                )
                conn.execute(f"DELETE FROM rejections WHERE task IN ({marks})", chunk)

    def requeue(self, task: int, process: int, rejected_by: Optional[str] = None) -> None:
        with self._db.write("give a task back") as conn:
            conn.execute(
                "UPDATE tasks SET owner=NULL, owner_conn=NULL WHERE id=? AND owner=?",
                (task, process),
            )
            if rejected_by is not None:
                conn.execute("INSERT OR IGNORE INTO rejections VALUES (?, ?)", (task, rejected_by))

    def requeue_connection(self, process: int, conn_id: int) -> int:
        """Give back every task connection *conn_id* holds. :returns: how many."""
        with self._db.write("give tasks back") as conn:
            cursor = conn.execute(
                "UPDATE tasks SET owner=NULL, owner_conn=NULL WHERE owner=? AND owner_conn=?",
                (process, conn_id),
            )
            return cursor.rowcount

    def dead_letter(self, task: int, process: Optional[int], reason: str) -> None:
        """Move the task to the dead letters (*process* None: whoever holds it)."""
        with self._db.write("dead-letter a task") as conn:
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
        with self._db.write("cancel a task") as conn:
            conn.execute("UPDATE tasks SET cancelled=1 WHERE id=?", (task,))


class QueueTable:
    """The queues as the operator sees them: statistics, dead letters, waiting tasks, and
    moving them (``kiwipy dead``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def queue_stats(self, queue: Optional[str] = None) -> dict[str, tuple[int, int, int, int]]:
        """:returns: queue name -> ``(ready, unsettled, consumers, dead letters)``."""
        where, params = ("WHERE queue=?", (queue,)) if queue is not None else ("", ())
        stats: dict[str, list[int]] = {}
        for name, ready, out in self._db.read(
            "SELECT queue, SUM(owner IS NULL), SUM(owner IS NOT NULL) FROM tasks"
            f" {where} GROUP BY queue",
            params,
        ):
            stats.setdefault(name, [0, 0, 0, 0])[0:2] = [ready, out]
        for name, count in self._db.read(
            f"SELECT queue, SUM(count) FROM consumers {where} GROUP BY queue", params
        ):
            stats.setdefault(name, [0, 0, 0, 0])[2] = count
        for name, count in self._db.read(
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
            for values in self._db.read(
                "SELECT id, queue, body, encoder, correlation_id, reason, deliveries, died"
                f" FROM dead_letters {where} ORDER BY id",
                params,
            )
        ]

    def requeue_dead(self, ids: Sequence[int]) -> int:
        """Put dead letters back at the end of their queues. :returns: how many."""
        moved = 0
        with self._db.write("requeue dead letters", durable=True) as conn:
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
        with self._db.write("delete dead letters") as conn:
            return sum(
                conn.execute("DELETE FROM dead_letters WHERE id=?", (id_,)).rowcount for id_ in ids
            )

    def take_ready(self, queue: str, limit: int, after: int = 0) -> list[Row]:
        """:returns: up to *limit* ready tasks of *queue* with an id above *after*, oldest
        first, read without taking them."""
        return [
            task_row(values)
            for values in self._db.read(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE queue=? AND owner IS NULL AND id > ?"
                " ORDER BY id LIMIT ?",
                (queue, after, limit),
            )
        ]

    def park_tasks(self, ids: Sequence[int], reason: str) -> int:
        """Move ready tasks by id to the dead letters with *reason* (those taken meanwhile
        stay). :returns: how many."""
        moved = 0
        with self._db.write("park tasks") as conn:
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
        with self._db.write("remove moved tasks") as conn:
            return sum(
                conn.execute("DELETE FROM tasks WHERE id=? AND owner IS NULL", (id_,)).rowcount
                for id_ in ids
            )
