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


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://guest:guest@127.0.0.1:1/?heartbeat=abc", "heartbeat='abc' is invalid"),
        ("amqp://guest:guest@127.0.0.1:1/?heartbeat=70000", "heartbeat='70000' is invalid"),
        ("amqp://guest:guest@127.0.0.1:1/?hearbeat=30", "unknown URL parameter 'hearbeat'"),
        ("amqps://127.0.0.1:1/?no_verify_ssl=false", "no_verify_ssl='false' is invalid"),
        ("memory://x?heartbeat=30", "unknown URL parameter 'heartbeat'"),
    ],
)
def test_bad_url_parameters_are_refused_before_connecting(url: str, message: str) -> None:
    # Port 1 has no broker: the check must come first, or this would be a connection error.
    with pytest.raises(ValueError, match=message):
        kiwipy.connect(url)


def test_good_url_parameters_pass_the_check() -> None:
    from kiwipy.rmq._options import check_url_query

    check_url_query("amqp://h/?heartbeat=0&timeout=5&name=w1&reconnect_interval=0.5&fail_fast=no")
    check_url_query({"url": "amqps://h/?cafile=/ca.pem&no_verify_ssl=1&auth=external"})
    check_url_query(None)
