"""The embedded transport: ``sqlite://`` communicators, any number of processes on one host
sharing one SQLite file, with no broker process.

* ``kiwipy.connect('sqlite:///relative/path.db')`` or ``'sqlite:////absolute/path.db'``
  (SQLAlchemy's convention) gives a :class:`SqliteCommunicator`, the shared thread facade
  over :class:`AsyncSqliteCommunicator`; :func:`async_connect` gives the latter on the
  running loop.
* The communicator is the shared core (:mod:`kiwipy.core`); this package supplies its
  broker (:mod:`._broker`), which keeps tasks, RPC requests, replies and broadcasts in the
  file (:mod:`._store`), wakes other processes with doorbells (:mod:`._doorbell`) from a
  pump thread (:mod:`._pump`), and notices a dead process by its released lock file
  (:mod:`._lockfile`).
* Guarantees and limits: ``docs/sqlite.md``.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from typing import Any

from typing_extensions import Unpack

from .. import _tracing, exceptions
from .._thread import DEFAULT_TIMEOUT, ThreadCommunicator
from ..core import DEFAULT_TASK_QUEUE, AsyncBrokerCommunicator
from ..core import BrokerIncomingTask as SqliteIncomingTask
from ..core import BrokerTaskQueue as SqliteTaskQueue
from . import _files, _filesystem, _url
from ._admin import SqliteAdmin, check_sqlite_url
from ._broker import BrokerSettings, SqliteBroker
from ._options import SqliteOptions, resolve_options

__all__ = (
    "DEFAULT_TASK_QUEUE",
    "SCHEME",
    "AsyncSqliteCommunicator",
    "BrokerSettings",
    "SqliteAdmin",
    "SqliteBroker",
    "SqliteCommunicator",
    "SqliteIncomingTask",
    "SqliteOptions",
    "SqliteTaskQueue",
    "async_connect",
    "check_sqlite_url",
    "connect",
    "open_broker",
)

#: The uri scheme of this transport.
SCHEME = "sqlite://"

_BROKER_OPTIONS = ("synchronous", "busy_timeout", "task_delivery_limit", "task_message_ttl")


class AsyncSqliteCommunicator(AsyncBrokerCommunicator):
    """The asyncio communicator of the SQLite transport: the shared core on a
    :class:`SqliteBroker`. Use :func:`async_connect` to make one."""

    system = _tracing.SQLITE

    def __init__(self, broker: SqliteBroker, options: SqliteOptions) -> None:
        if options.get("encoder") is None and options.get("decoder") is None:
            options = {**options, "encoder": "yaml"}
        super().__init__(broker, options)
        self._sqlite_broker = broker

    @property
    def broker(self) -> SqliteBroker:
        """The broker of this process on the file."""
        return self._sqlite_broker

    @property
    def path(self) -> str:
        """The SQLite file."""
        return self._sqlite_broker.path


# The brokers of this process, one per (file, broker settings)

_BROKERS: dict[BrokerSettings, SqliteBroker] = {}
_BROKERS_LOCK = threading.Lock()


def _forget(broker: SqliteBroker) -> None:
    with _BROKERS_LOCK:
        if _BROKERS.get(broker.settings) is broker:
            del _BROKERS[broker.settings]
    broker.shutdown()


def open_broker(settings: BrokerSettings) -> SqliteBroker:
    """:returns: this process's broker on the file of *settings*, opened on first use; it
    closes when its last communicator does."""
    with _BROKERS_LOCK:
        broker = _BROKERS.get(settings)
        if broker is None or broker.closed:
            broker = SqliteBroker(settings)
            broker.open()
            broker.on_empty = _forget
            _BROKERS[settings] = broker
        return broker


def _shutdown_all() -> None:
    with _BROKERS_LOCK:
        brokers = list(_BROKERS.values())
        _BROKERS.clear()
    for broker in brokers:
        broker.shutdown()


def _forget_in_child() -> None:
    # A forked child must not use its parent's brokers (their pump threads did not fork).
    _BROKERS.clear()


atexit.register(_shutdown_all)
os.register_at_fork(after_in_child=_forget_in_child)


def _settings(uri: str, options: dict[str, Any]) -> tuple[BrokerSettings, SqliteOptions]:
    path, query = _url.parse_url(uri)
    resolved = resolve_options(options, query)
    _filesystem.check_local_filesystem(path)
    _files.create_private(path)
    ttl = resolved["task_message_ttl"]
    settings = BrokerSettings(
        str(path),
        synchronous=resolved["synchronous"],
        busy_timeout=resolved["busy_timeout"],
        delivery_limit=resolved["task_delivery_limit"],
        message_ttl=None if ttl is None else ttl / 1000,
    )
    for name in _BROKER_OPTIONS:
        resolved.pop(name, None)  # type: ignore[misc]
    return settings, resolved


async def async_connect(uri: str, **options: Unpack[SqliteOptions]) -> AsyncSqliteCommunicator:
    """:returns: an :class:`AsyncSqliteCommunicator` connected on the running loop to the
    file named in *uri* (``sqlite:///relative.db`` or ``sqlite:////absolute.db``).

    :param options: see :class:`SqliteOptions` (also settable as URL query parameters).
    :raises ValueError: if *uri* is not a ``sqlite://`` URL or an option cannot work.
    :raises NetworkFilesystemError: if the file is on a network filesystem.
    :raises StorageError: if the file cannot be opened as this transport's database.
    """
    settings, resolved = _settings(uri, dict(options))
    while True:
        broker = await asyncio.to_thread(open_broker, settings)
        communicator = AsyncSqliteCommunicator(broker, resolved)
        try:
            await communicator.connect()
        except exceptions.CommunicatorClosed:
            if broker.closed:  # its last communicator closed meanwhile: open a new one
                continue
            raise
        return communicator


class SqliteCommunicator(ThreadCommunicator):
    """The blocking SQLite communicator: :class:`AsyncSqliteCommunicator` on a private loop
    thread, behind the shared thread facade. Subscribers receive this communicator.

    :param uri: ``sqlite:///relative.db`` or ``sqlite:////absolute.db``.
    :param async_task_timeout: seconds any call may take before :data:`kiwipy.TimeoutError`.
    :param options: see :class:`SqliteOptions`.
    """

    def __init__(
        self,
        uri: str,
        *,
        async_task_timeout: float = DEFAULT_TIMEOUT,
        **options: Unpack[SqliteOptions],
    ) -> None:
        _settings(uri, dict(options))  # fail early, on the caller's thread

        async def create() -> AsyncSqliteCommunicator:
            return await async_connect(uri, **options)

        super().__init__(create, timeout=async_task_timeout, name=f"kiwipy {uri}")


def connect(
    uri: str, *, async_task_timeout: float = DEFAULT_TIMEOUT, **options: Any
) -> SqliteCommunicator:
    """:returns: a :class:`SqliteCommunicator`; what ``kiwipy.connect('sqlite://...')`` calls.

    :param options: see :class:`SqliteOptions`.
    """
    return SqliteCommunicator(uri, async_task_timeout=async_task_timeout, **options)
