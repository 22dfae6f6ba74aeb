"""Two kiwipy 0.9 peers against each other, through the harness: proves ``Peer09`` works."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from .._ci import require
from .harness import Peer09, delete_peer09_declarations, kiwipy09_python

pytestmark = [pytest.mark.interop, pytest.mark.integration]

URL = os.environ.get("KIWIPY_TEST_RMQ_URI", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="module", autouse=True)
def _prerequisites() -> None:
    address = (urlsplit(URL).hostname or "127.0.0.1", urlsplit(URL).port or 5672)
    try:
        socket.create_connection(address, timeout=2).close()
        reachable = True
    except OSError:
        reachable = False
    require(reachable, f"the shared RabbitMQ broker at {address} is unreachable")
    try:
        kiwipy09_python()
    except (subprocess.CalledProcessError, OSError) as exc:
        require(False, f"cannot create the kiwipy 0.9 venv: {exc}")


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique exchange prefix; what 0.9 declared under it is deleted afterwards."""
    name = f"kiwitest.peer09.{uuid.uuid4().hex[:8]}"
    yield name
    asyncio.run(delete_peer09_declarations(URL, name))


def test_worker_and_task_sender(prefix: str) -> None:
    with Peer09("worker", url=URL, exchange_prefix=prefix) as worker:
        worker.wait_for("ready")
        bodies = [0, 1, 2, "boom"]
        with Peer09("send-tasks", url=URL, exchange_prefix=prefix, bodies=bodies) as sender:
            results = sender.wait_for_count("result", 3)
            error = sender.wait_for("error")
            assert sender.stop() == 0
        assert [r["result"] for r in results] == [{"echo": i, "by": "kiwipy-0.9"} for i in range(3)]
        assert (error["body"], error["error_type"], error["error"]) == (
            "boom",
            "RemoteException",
            "boom",
        )
        received = [t["body"] for t in worker.wait_for_count("task", 4)]
        assert sorted(received, key=str) == sorted(bodies, key=str)
        assert worker.stop() == 0
        assert worker.events("closed") == [{"event": "closed"}]


def test_rpc_server_and_client(prefix: str) -> None:
    server_id = f"server-{uuid.uuid4().hex[:6]}"
    common: dict[str, Any] = {
        "url": URL,
        "exchange_prefix": prefix,
        "identifier": server_id,
        "encoder": "json",
    }
    with Peer09("rpc-server", **common) as server:
        server.wait_for("ready")
        with Peer09("rpc-client", count=3, **common) as client:
            results = client.wait_for_count("result", 3)
            assert client.stop() == 0
        assert [(r["body"], r["result"]) for r in results] == [
            (i, {"echo": i, "by": "kiwipy-0.9"}) for i in range(3)
        ]
        assert [e["body"] for e in server.wait_for_count("rpc", 3)] == [0, 1, 2]
        assert client.events("error") == []
        assert server.stop() == 0


def test_listener_and_broadcaster(prefix: str) -> None:
    common: dict[str, Any] = {"url": URL, "exchange_prefix": prefix, "encoder": "msgpack"}
    with Peer09("listener", **common) as listener:
        listener.wait_for("ready")
        with Peer09("broadcaster", count=3, **common) as broadcaster:
            sent = broadcaster.wait_for_count("sent", 3)
            assert broadcaster.stop() == 0
        assert all(s["acked"] for s in sent)
        received = listener.wait_for_count("broadcast", 3)
        assert received == [
            {
                "event": "broadcast",
                "body": i,
                "sender": "peer09",
                "subject": f"subject.{i}",
                "correlation_id": i,
            }
            for i in range(3)
        ]
        assert listener.stop() == 0
