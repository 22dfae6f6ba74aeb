"""Fixtures for fault-injection tests: private RabbitMQ nodes and TCP proxies.

Every test under ``tests/faults`` is marked ``faults``. A missing RabbitMQ installation or an
unreachable shared broker skips the tests that need them, except under ``CI=true``, where a
silent skip would hide the missing coverage, so it fails instead.
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import pytest

from .._ci import require
from .broker import PrivateBroker, find_epmd, find_rmq_bin
from .cluster import PrivateCluster
from .proxy import TcpProxy

_HERE = Path(__file__).parent


#: aiormq 6.9 leaves the StreamWriter of a connection the broker dropped (a broker stopped,
#: killed or restarted here on purpose) unclosed; its ResourceWarning surfaces at a garbage
#: collection. A socket leak in the dependency, not ours, and only where brokers die: the
#: rest of the suite runs without this filter.
DROPPED_CONNECTION_LEAK = (
    "ignore:Exception ignored in. <function StreamWriter.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.filterwarnings(DROPPED_CONNECTION_LEAK))


@pytest.fixture(autouse=True)
def _collect_leaks_here() -> Iterator[None]:
    """Collect garbage at the end of each fault test (the last fixture torn down, after its
    event loop is closed), so a leak of a broker killed here warns under this test's filter,
    not later in a test without it."""
    yield
    gc.collect()


def shared_broker_address() -> tuple[str, int]:
    """Host and port of the shared broker: ``KIWIPY_TEST_RMQ_URI``, else 127.0.0.1:5672."""
    url = urlsplit(os.environ.get("KIWIPY_TEST_RMQ_URI", "amqp://127.0.0.1:5672/"))
    return url.hostname or "127.0.0.1", url.port or 5672


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def _session_broker(**options: int) -> Iterator[PrivateBroker]:
    installed = find_rmq_bin() is not None and find_epmd() is not None
    require(installed, "RabbitMQ is not installed (rabbitmq-server and epmd not found)")
    broker = PrivateBroker(**options)
    try:
        yield broker.start()
    finally:
        broker.close()


@pytest.fixture(scope="session")
def private_broker() -> Iterator[PrivateBroker]:
    """A private node with default settings, shared by the session; tests may restart it."""
    yield from _session_broker()


@pytest.fixture(scope="session")
def timeout_broker() -> Iterator[PrivateBroker]:
    """A private node that times out unacknowledged deliveries after 3 s (checked every 1 s)."""
    yield from _session_broker(consumer_timeout_ms=3000, channel_tick_interval_ms=1000)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A proxy to the shared broker."""
    host, port = shared_broker_address()
    require(_reachable(host, port), f"the shared RabbitMQ broker on {host}:{port} is unreachable")
    with TcpProxy(host, port) as started:
        yield started


@pytest.fixture
def proxy_to() -> Iterator[Callable[..., TcpProxy]]:
    """A factory ``proxy_to(port, host='127.0.0.1')`` of started proxies, closed after the test."""
    made: list[TcpProxy] = []

    def make(port: int, host: str = "127.0.0.1") -> TcpProxy:
        made.append(TcpProxy(host, port).start())
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture(scope="session")
def cluster() -> Iterator[PrivateCluster]:
    """A private 3-node cluster shared by the session (docs/cluster.md); tests may kill and
    restart its nodes, and must leave all three running."""
    installed = find_rmq_bin() is not None and find_epmd() is not None
    require(installed, "RabbitMQ is not installed (rabbitmq-server and epmd not found)")
    made = PrivateCluster()
    try:
        yield made.start()
    finally:
        made.close()
