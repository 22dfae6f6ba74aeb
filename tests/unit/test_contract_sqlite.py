"""The communicator contract (``tests/contract.py``), its bad-input battery and the deadline
and tracing contracts against the SQLite communicators, each test on a file of its own."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kiwipy import _tracing, sqlite
from kiwipy.sqlite._store import Store
from tests.contract import (
    ALL,
    AsyncTransport,
    BlockingTransport,
    CommunicatorContract,
    ContractTransport,
)
from tests.contract_tracing import TracingContract


def _sqlite_transport(
    path: pathlib.Path, unique_name: str, flavour: str, **options: Any
) -> ContractTransport:
    uri = f"sqlite:///{path}"

    async def dead_letters(queue: str) -> list[Any]:
        store = Store(str(path))
        try:
            return [letter.body for letter in store.queues.dead_letters(queue)]
        finally:
            store.close()

    if flavour == "async":

        async def create() -> sqlite.AsyncSqliteCommunicator:
            return await sqlite.async_connect(uri, **options)

        return AsyncTransport(create, namespace=unique_name, dead_letters=dead_letters)
    return BlockingTransport(
        lambda: sqlite.connect(uri, **options), namespace=unique_name, dead_letters=dead_letters
    )


#: ``max_message_size`` of the communicators here: low, so that the battery's message over
#: the limit is quick to build.
MESSAGE_LIMIT = 1024 * 1024


class _SqliteContract(CommunicatorContract):
    flavour = "async"
    options: dict[str, Any] = {}
    capabilities = ALL
    message_limit = MESSAGE_LIMIT

    @pytest.fixture
    async def transport(
        self, unique_name: str, tmp_path: pathlib.Path
    ) -> AsyncIterator[ContractTransport]:
        path = tmp_path / "kiwipy.db"
        options = {"max_message_size": MESSAGE_LIMIT, **self.options}
        made = _sqlite_transport(path, unique_name, self.flavour, **options)
        async with made as transport:
            yield transport


class TestAsyncSqlite(_SqliteContract):
    pass


class TestThreadSqlite(_SqliteContract):
    """The thread flavour, with the other encoder and durability than the asyncio one, and
    without OpenTelemetry (broadcasts handed over from the pump: see test_contract_memory)."""

    flavour = "thread"
    options = {"encoder": "msgpack", "synchronous": "normal"}

    @pytest.fixture(autouse=True)
    def _without_tracing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(_tracing, "ENABLED", False)


class TestAsyncSqliteApart(_SqliteContract):
    """Every communicator on a broker of its own: all traffic between them goes through the
    file and the doorbells, as between processes."""

    @pytest.fixture
    async def transport(
        self, unique_name: str, tmp_path: pathlib.Path
    ) -> AsyncIterator[ContractTransport]:
        path = tmp_path / "kiwipy.db"
        settings, options = sqlite._settings(
            f"sqlite:///{path}", {"max_message_size": MESSAGE_LIMIT}
        )

        async def create() -> sqlite.AsyncSqliteCommunicator:
            broker = sqlite.SqliteBroker(settings)
            await asyncio.to_thread(broker.open)
            broker.on_empty = lambda b: b.shutdown()
            communicator = sqlite.AsyncSqliteCommunicator(broker, options)
            await communicator.connect()
            return communicator

        async def dead_letters(queue: str) -> list[Any]:
            store = Store(str(path))
            try:
                return [letter.body for letter in store.queues.dead_letters(queue)]
            finally:
                store.close()

        async with AsyncTransport(create, namespace=unique_name, dead_letters=dead_letters) as t:
            yield t


class _SqliteTracing(TracingContract):
    system = "kiwipy.sqlite"
    flavour = "async"

    @pytest.fixture
    async def transport(
        self, unique_name: str, tmp_path: pathlib.Path
    ) -> AsyncIterator[ContractTransport]:
        path = tmp_path / "kiwipy.db"
        made = _sqlite_transport(
            path, unique_name, self.flavour, encoder="json", task_queue=f"{unique_name}.tasks"
        )
        async with made as transport:
            yield transport


class TestAsyncSqliteTracing(_SqliteTracing):
    pass


class TestThreadSqliteTracing(_SqliteTracing):
    flavour = "thread"
