"""Several endpoints against the one test broker: an endpoint that refuses is skipped, on the
first connection of every communicator kind (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from yarl import URL

import kiwipy
from kiwipy import rmq

from .conftest import Names


def _closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_dead_first(rmq_uri: str) -> tuple[str, list[str]]:
    """:returns: the broker behind a dead endpoint, as one URL and as a list of URLs."""
    url = URL(rmq_uri)
    dead = url.with_host("127.0.0.1").with_port(_closed_port())
    comma = str(dead).replace(
        f"@127.0.0.1:{dead.port}", f"@127.0.0.1:{dead.port},{url.host}:{url.port}", 1
    )
    return comma, [str(dead), rmq_uri]


async def test_async_connect_skips_a_dead_endpoint(rmq_uri: str, names: Names) -> None:
    comma, listed = _with_dead_first(rmq_uri)
    for params in (comma, listed, {"url": listed}):
        comm = await rmq.async_connect(params, **names.options(shuffle_endpoints=False))
        try:
            await comm.add_rpc_subscriber(lambda _c, msg: msg + 1, "echo")
            assert await asyncio.wait_for(await comm.rpc_send("echo", 1), 5) == 2
            assert f":{URL(rmq_uri).port}" in str(comm)  # it names the node it is on
        finally:
            await comm.disconnect()


def test_thread_communicators_take_several_endpoints(rmq_uri: str, names: Names) -> None:
    comma, listed = _with_dead_first(rmq_uri)
    options = names.options(shuffle_endpoints=False)
    with kiwipy.connect(comma, **options) as worker, kiwipy.connect(listed, **options) as sender:
        worker.add_task_subscriber(lambda _c, task: task * 2)
        future = sender.task_send(21)
        assert future is not None and future.result(10) == 42
    comm = rmq.RmqThreadCommunicator(listed, **options)
    try:
        assert comm.server_properties["product"] == "RabbitMQ"
    finally:
        comm.close()


def test_no_endpoint_reachable_says_why_for_each() -> None:
    first, second = _closed_port(), _closed_port()
    with pytest.raises(kiwipy.ConnectFailed) as info:
        kiwipy.connect(f"amqp://guest:secret@127.0.0.1:{first},127.0.0.1:{second}/")
    text = str(info.value)
    assert "secret" not in text
    assert f"nothing listening on 127.0.0.1:{first}" in text
    assert f"nothing listening on 127.0.0.1:{second}" in text
