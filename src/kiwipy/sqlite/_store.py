"""The SQLite file as the transport uses it: one :class:`Store` holding the connections
(:mod:`._database`, the schema and the rules of writing) and the statements, grouped by
table (:mod:`._tables`, :mod:`._task_tables`). Free of threads and wake-ups.
"""

from __future__ import annotations

from typing import Optional

from ._database import SCHEMA_VERSION, Database, Row
from ._tables import BroadcastTable, ProcessTable, RpcTables
from ._task_tables import DeadLetter, QueueTable, TaskTable

__all__ = ("SCHEMA_VERSION", "DeadLetter", "Row", "Store")


class Store:
    """The database file at *path*, opened per thread, and its tables.

    :param synchronous: the ``synchronous`` level of task commits (``'full'`` or
        ``'normal'``).
    :param busy_timeout: seconds a write waits for the file's write lock.
    """

    def __init__(self, path: str, synchronous: str = "full", busy_timeout: float = 10.0) -> None:
        self.path = path
        self.db = Database(path, synchronous, busy_timeout)
        self.processes = ProcessTable(self.db)
        self.tasks = TaskTable(self.db)
        self.queues = QueueTable(self.db)
        self.rpc = RpcTables(self.db)
        self.broadcasts = BroadcastTable(self.db)

    def initialise(self) -> None:
        """Put the file in WAL mode and create the tables (idempotent, safe to race)."""
        self.db.initialise()

    def schema_version(self) -> Optional[int]:
        """:returns: the schema version the file records, ``None`` if it has no kiwipy
        tables."""
        return self.db.schema_version()

    def integrity_check(self) -> str:
        return self.db.integrity_check()

    def close(self) -> None:
        """Close every connection this store opened, on any thread."""
        self.db.close()
