"""``kiwipy.connect``: the entry point kiwipy 0.9 clients call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import kiwipy
from kiwipy import encoders, memory


@pytest.fixture
def uri(unique_name: str) -> Iterator[str]:
    yield f"memory://{unique_name}"
    memory.drop_broker(unique_name)


def test_memory_uri(uri: str) -> None:
    with kiwipy.connect(uri) as server, kiwipy.connect(uri) as client:
        assert isinstance(server, memory.MemoryCommunicator)
        server.add_rpc_subscriber(lambda _c, msg: f"hello {msg}", "greeter")
        assert client.rpc_send("greeter", "world").result(5) == "hello world"


def test_default_memory_broker() -> None:
    with kiwipy.connect("memory://") as comm:
        assert isinstance(comm, memory.MemoryCommunicator)
        assert isinstance(comm.core, memory.AsyncMemoryCommunicator)
        assert comm.core.broker is memory.get_broker()


def test_options_are_forwarded(uri: str) -> None:
    with kiwipy.connect(uri, encoder="json", async_task_timeout=1.5) as comm:
        assert isinstance(comm, memory.MemoryCommunicator)
        assert isinstance(comm.core, memory.AsyncMemoryCommunicator)
        assert comm.core.encoder is encoders.JSON
    with pytest.raises(TypeError, match="bogus"):
        kiwipy.connect(uri, bogus=True)


@pytest.mark.parametrize("uri", ["redis://localhost", "memory:", "", "AMQP"])
def test_unknown_scheme(uri: str) -> None:
    with pytest.raises(ValueError) as info:
        kiwipy.connect(uri)
    for scheme in ("amqp://", "amqps://", "memory://"):
        assert scheme in str(info.value)
