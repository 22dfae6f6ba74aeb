"""Subscribers the hostile battery (``tests/contract_battery.py``) found trouble with, pinned
as plain regression tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import kiwipy
from kiwipy import memory
from kiwipy.rmq import protocol


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


def _raise_unprintable(*_args: object) -> None:
    raise UnprintableError


def test_local_reports_an_exception_whose_str_raises() -> None:
    comm = kiwipy.LocalCommunicator()
    comm.add_task_subscriber(_raise_unprintable)
    comm.add_rpc_subscriber(_raise_unprintable, "unprintable")
    for future in (comm.task_send(1), comm.rpc_send("unprintable", 1)):
        error = future.exception(timeout=0)
        assert isinstance(error, kiwipy.RemoteException)
        assert "UnprintableError" in str(error) and error.remote_type.endswith("UnprintableError")


def test_rmq_exception_response_for_an_exception_whose_str_raises() -> None:
    response = protocol.exception_response(UnprintableError())
    assert "UnprintableError" in response["exception"]


@pytest.fixture
def thread_memory(unique_name: str) -> Iterator[memory.MemoryCommunicator]:
    comm = memory.connect(f"memory://{unique_name}")
    yield comm
    comm.close()
    memory.drop_broker(unique_name)


def test_unhashable_rpc_identifier_on_the_thread_facade(
    thread_memory: memory.MemoryCommunicator,
) -> None:
    # The core accepts any RPC identifier (compared as a string); the facade keyed its
    # per-subscriber lane by the identifier itself, so every call failed "unhashable type".
    ident = thread_memory.add_rpc_subscriber(lambda _c, msg: msg * 2, [1, 2])
    assert thread_memory.rpc_send(ident, 21).result(timeout=5) == 42
