"""Fixtures shared by every test directory. Keep it minimal: transport-specific fixtures
belong in the directory that needs them."""

from __future__ import annotations

import os
import re
import socket
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from ._ci import require


@pytest.fixture(autouse=True)
def _tracing_off_after_the_test() -> Iterator[None]:
    """Spans are recorded only in the tests that ask for them (``tests/contract_tracing.py``)."""
    yield
    tracing = sys.modules.get("tests.contract_tracing")
    if tracing is not None:
        tracing.stop_sampling()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses, for per-test isolation: a ``memory://`` broker name, or
    RabbitMQ exchange and queue names. It names the test, to help debugging."""
    test = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40]
    return f"kiwipy-test-{test}-{uuid.uuid4().hex[:8]}"


DEFAULT_URI = "amqp://guest:guest@127.0.0.1:5672/"


def broker_uri() -> str:
    return os.environ.get("KIWIPY_TEST_RMQ_URI", DEFAULT_URI)


def _reachable(uri: str) -> bool:
    url = urlsplit(uri)
    try:
        socket.create_connection((url.hostname or "127.0.0.1", url.port or 5672), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def rmq_uri() -> str:
    """The broker URL; skips (fails under ``CI=true``) if nothing listens there."""
    uri = broker_uri()
    require(_reachable(uri), f"RabbitMQ is not reachable at {uri}")
    return uri
