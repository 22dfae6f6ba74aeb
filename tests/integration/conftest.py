"""Fixtures for the tests against the real RabbitMQ broker (``KIWIPY_TEST_RMQ_URI``, else
``amqp://guest:guest@127.0.0.1:5672/``).

Every test here is marked ``integration``. An unreachable broker skips them with the reason,
except under ``CI=true``, where it fails the run (a silent skip would hide the gap). Every
test gets its own exchange and queue names (a uuid prefix) and uses ``testing_mode``, so tests
never see each other's messages and leave nothing behind for long.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiormq
import pytest

from kiwipy import rmq

from .._names import BrokerNames

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


class Names(BrokerNames):
    """Unique broker names for one test, in testing mode, with this library's task queue
    arguments (dead-lettering; testing mode alone would give kiwipy 0.9's, see
    ``test_rmq_tasks.py`` for those)."""

    def __init__(self) -> None:
        super().__init__("kt", testing_mode=True, task_queue_compat=False)


@pytest.fixture
def names() -> Names:
    return Names()


@pytest.fixture
async def communicator(rmq_uri: str, names: Names) -> AsyncIterator[rmq.RmqCommunicator]:
    comm = await rmq.async_connect(rmq_uri, **names.options())
    yield comm
    await comm.disconnect()


@pytest.fixture
async def communicator2(rmq_uri: str, names: Names) -> AsyncIterator[rmq.RmqCommunicator]:
    """A second communicator on the same names (another process, as far as the broker knows)."""
    comm = await rmq.async_connect(rmq_uri, **names.options())
    yield comm
    await comm.disconnect()


@pytest.fixture
def thread_communicator(rmq_uri: str, names: Names) -> Iterator[rmq.RmqThreadCommunicator]:
    comm = rmq.RmqThreadCommunicator.connect(rmq_uri, **names.options())
    yield comm
    comm.close()


@pytest.fixture
async def raw_channel(rmq_uri: str) -> AsyncIterator[aiormq.abc.AbstractChannel]:
    """A plain aiormq channel (publisher confirms on) to look at the wire directly."""
    connection = await aiormq.connect(rmq_uri)
    channel = await connection.channel()
    yield channel
    await connection.close()
