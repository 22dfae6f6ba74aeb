"""The operator's side of the SQLite transport: look at a file and act on its dead letters
and waiting tasks, without joining it as a process.

:class:`SqliteAdmin` opens an existing file through :class:`~._store.Store` (it never
creates one: a missing file or one without kiwipy's tables is an error) and registers no
process, holds no lock file and starts no pump, so other processes never see it. After a
change that gives workers something to do (dead letters requeued) it rings every live
process's doorbell, so their consumers look at once rather than at their next safety poll.
"""

from __future__ import annotations

import os
import pathlib
import secrets
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional, Union

from .. import encoders, exceptions
from . import _doorbell, _lockfile, _url
from ._options import resolve_options
from ._store import SCHEMA_VERSION, DeadLetter, Row, Store

__all__ = ("PARKED", "ProcessInfo", "QueueInfo", "SqliteAdmin", "check_sqlite_url")

#: The reason of a task an operator moved to the dead letters (``kiwipy dead park``).
PARKED = "parked-by-operator"


class ProcessInfo(NamedTuple):
    """A process registered on the file."""

    id: int
    pid: int
    host: str
    started: float
    #: whether its lock file is still locked; ``False``: it died and no live process on the
    #: file has released it yet (the next one to start or to check its peers will).
    alive: bool
    lock: str
    #: task queue name -> how many consumers it has on it
    consumers: dict[str, int]
    #: the RPC identifiers it answers
    rpc: list[str]


class QueueInfo(NamedTuple):
    """One task queue of the file."""

    name: str
    ready: int
    unsettled: int
    consumers: int
    dead: int


def check_sqlite_url(url: str) -> pathlib.Path:
    """:returns: the file a ``sqlite://`` URL names, after checking its form and its query
    parameters (without touching the file system).

    :raises ValueError: saying what is wrong and the expected forms.
    """
    path, query = _url.parse_url(url)
    try:
        resolve_options({}, query)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid SQLite URL {url!r}: {exc}") from None
    return path


class SqliteAdmin:
    """The existing kiwipy SQLite file named by *url* (``sqlite:///relative.db`` or
    ``sqlite:////absolute.db``), for inspection and repair.

    :raises ValueError: for a URL that is not a valid ``sqlite://`` URL.
    :raises FileNotFoundError: naming the path, if the file does not exist.
    :raises StorageError: if the file is not a kiwipy database (or not SQLite at all).
    """

    def __init__(self, url: str, busy_timeout: float = 10.0) -> None:
        path = check_sqlite_url(url)
        if not path.exists():
            where = "" if path.parent.is_dir() else f" (nor does its directory {path.parent})"
            raise FileNotFoundError(
                2, f"the SQLite file {path} does not exist{where}; nothing to look at", str(path)
            )
        if path.is_dir():
            raise IsADirectoryError(21, f"{path} is a directory, not a SQLite file", str(path))
        self.path = str(path)
        self._store = Store(self.path, busy_timeout=busy_timeout)
        try:
            version = self._store.schema_version()
        except BaseException:
            self._store.close()
            raise
        if version != SCHEMA_VERSION:
            self._store.close()
            found = "no kiwipy tables" if version is None else f"schema version {version}"
            raise exceptions.StorageError(
                self.path,
                "open",
                RuntimeError(f"{found}; this kiwipy reads schema version {SCHEMA_VERSION}"),
            )

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> SqliteAdmin:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Looking

    def processes(self) -> list[ProcessInfo]:
        """:returns: every process registered on the file, oldest first."""
        consumers: dict[int, dict[str, int]] = {}
        for process, queue, count in self._store.processes.consumers():
            consumers.setdefault(process, {})[queue] = count
        rpc: dict[int, list[str]] = {}
        for key, process in self._store.rpc.bindings():
            rpc.setdefault(process, []).append(key)
        return [
            ProcessInfo(
                id_,
                pid,
                host,
                started,
                _lockfile.is_held(pathlib.Path(lock)),
                lock,
                consumers.get(id_, {}),
                rpc.get(id_, []),
            )
            for id_, pid, host, _, lock, started in sorted(self._store.processes.rows())
        ]

    def queues(self, names: Optional[Sequence[str]] = None) -> list[QueueInfo]:
        """:returns: the task queues with tasks, consumers or dead letters (or those
        *names*, each even if empty), by name."""
        if names is None:
            stats = self._store.queues.queue_stats()
        else:
            stats = {}
            for name in names:
                stats.update(self._store.queues.queue_stats(name))
        return [QueueInfo(name, *values) for name, values in stats.items()]

    def dead_letters(self, queue: Optional[str] = None) -> list[DeadLetter]:
        """:returns: the dead letters of *queue* (``None``: of every queue), oldest first."""
        return self._store.queues.dead_letters(queue)

    def ready_tasks(self, queue: str, limit: int, after: int = 0) -> list[Row]:
        """:returns: up to *limit* tasks waiting in *queue* with an id above *after*,
        oldest first (read, not taken: a worker may take one meanwhile)."""
        return self._store.queues.take_ready(queue, limit, after)

    def integrity_check(self) -> str:
        """:returns: SQLite's ``PRAGMA integrity_check``: ``'ok'`` or what is wrong."""
        return self._store.integrity_check()

    # Changing

    def requeue_dead(self, ids: Sequence[int]) -> int:
        """Put the dead letters *ids* back at the end of their queues (with no sender
        waiting for their results) and wake the live processes. :returns: how many."""
        moved = self._store.queues.requeue_dead(ids)
        if moved:
            self._ring(_doorbell.TASK)
        return moved

    def delete_dead(self, ids: Sequence[int]) -> int:
        """Delete the dead letters *ids*. :returns: how many."""
        return self._store.queues.delete_dead(ids)

    def park(self, ids: Sequence[int], reason: str = PARKED) -> int:
        """Move the waiting tasks *ids* to the dead letters (those a worker took meanwhile
        stay with it). :returns: how many."""
        return self._store.queues.park_tasks(ids, reason)

    def delete_ready(self, ids: Sequence[int]) -> int:
        """Delete the waiting tasks *ids* (those a worker took meanwhile stay with it).
        :returns: how many."""
        return self._store.queues.delete_tasks(ids)

    @staticmethod
    def decode_task(row: Union[Row, DeadLetter]) -> tuple[Any, bool]:
        """:returns: the ``(task, no_reply)`` a stored task's body encodes.

        :raises DecodeError: if the body is not a task of a known encoder.
        """
        try:
            encoder = encoders.get_encoder(row.encoder)
        except ValueError:
            raise exceptions.DecodeError(
                f"task {row.id} was encoded with {row.encoder!r}, which kiwipy cannot decode",
                encoder=row.encoder,
            ) from None
        try:
            body = encoder.decode(row.body)
        except Exception as exc:
            raise exceptions.DecodeError(f"task {row.id}: {exc}", encoder=encoder.name) from None
        if not isinstance(body, (tuple, list)) or len(body) != 2:
            raise exceptions.DecodeError(
                f"task {row.id}: not a (task, no_reply) pair", encoder=encoder.name
            )
        return body[0], bool(body[1])

    def _ring(self, kind: bytes) -> None:
        """Ring every live process's doorbell (a hint: a lost ring costs a safety poll)."""
        rows = self._store.processes.rows()
        if not rows:
            return
        try:
            bell = _doorbell.Doorbell(f"admin-{os.getpid()}-{secrets.token_hex(4)}")
        except OSError:
            return
        try:
            for _, _, _, name, _, _ in rows:
                try:
                    bell.ring(name, kind)
                except OSError:
                    pass
        finally:
            bell.close()
