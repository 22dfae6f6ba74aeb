"""The communicator contract (``tests/contract.py``) against the in-process communicators."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import kiwipy
from kiwipy import _tracing, memory
from kiwipy._portal import LOOP_ENV
from tests.contract import (
    ALL,
    ENCODES,
    AsyncTransport,
    BlockingTransport,
    CommunicatorContract,
    ContractTransport,
)
from tests.contract_tracing import TracingContract


class TestLocalCommunicator(CommunicatorContract):
    """Synchronous and queue-less: only the parts of the contract that need no capability."""

    capabilities = frozenset()

    @pytest.fixture
    async def transport(self, unique_name: str) -> AsyncIterator[ContractTransport]:
        async with BlockingTransport(kiwipy.LocalCommunicator, namespace=unique_name) as t:
            yield t


def _memory_transport(unique_name: str, flavour: str, encoder: Any) -> ContractTransport:
    uri = f"memory://{unique_name}"

    async def dead_letters(queue: str) -> list[Any]:
        return memory.get_broker(unique_name).dead_letters(queue)

    if flavour == "async":

        async def create() -> memory.AsyncMemoryCommunicator:
            return await memory.async_connect(uri, encoder=encoder)

        return AsyncTransport(create, namespace=unique_name, dead_letters=dead_letters)
    return BlockingTransport(
        lambda: memory.connect(uri, encoder=encoder),
        namespace=unique_name,
        dead_letters=dead_letters,
    )


class _MemoryContract(CommunicatorContract):
    flavour = "async"
    encoder: Any = None

    @pytest.fixture
    async def transport(self, unique_name: str) -> AsyncIterator[ContractTransport]:
        async with _memory_transport(unique_name, self.flavour, self.encoder) as transport:
            yield transport
        memory.drop_broker(unique_name)


# The flavours and encodings of the shared core (kiwipy.core) are covered across its two
# transports: asyncio by reference and thread with JSON here, asyncio with YAML and thread
# with msgpack on SQLite (tests/unit/test_contract_sqlite.py). The thread facade's loop is
# asyncio's here (what an installation without the uvloop extra runs) and uvloop's
# everywhere else in the suite (the default where it is installed, as in the dev extra).
# The thread flavour runs without OpenTelemetry, as installed without the otel extra: its
# broadcasts then go from the broker's thread to the subscribers' workers
# (kiwipy._broadcasts.hand_over); with tracing they go through the loop (the tracing
# contract below).


class TestAsyncMemory(_MemoryContract):
    capabilities = ALL - {ENCODES}


class TestThreadMemoryJson(_MemoryContract):
    capabilities = ALL
    flavour = "thread"
    encoder = "json"

    @pytest.fixture(autouse=True)
    def _asyncio_loop(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(LOOP_ENV, "asyncio")
        monkeypatch.setattr(_tracing, "ENABLED", False)


class _MemoryTracing(TracingContract):
    system = "kiwipy.memory"
    flavour = "async"

    @pytest.fixture
    async def transport(self, unique_name: str) -> AsyncIterator[ContractTransport]:
        uri = f"memory://{unique_name}"
        queue = f"{unique_name}.tasks"
        if self.flavour == "async":

            async def create() -> memory.AsyncMemoryCommunicator:
                return await memory.async_connect(uri, encoder="json", task_queue=queue)

            made: ContractTransport = AsyncTransport(create, namespace=unique_name)
        else:
            made = BlockingTransport(
                lambda: memory.connect(uri, encoder="json", task_queue=queue),
                namespace=unique_name,
            )
        async with made as transport:
            yield transport
        memory.drop_broker(unique_name)


class TestAsyncMemoryTracing(_MemoryTracing):
    pass


class TestThreadMemoryTracing(_MemoryTracing):
    flavour = "thread"
