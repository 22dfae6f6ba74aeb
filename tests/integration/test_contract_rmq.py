"""The shared contract suite (``tests/contract.py``) against both RabbitMQ communicators."""

from __future__ import annotations

from typing import Any

import pytest
from aiormq.abc import AbstractChannel
from pamqp import commands as spec

from kiwipy import _tracing, rmq
from tests.contract import ALL, AsyncTransport, BlockingTransport, CommunicatorContract
from tests.contract_tracing import TracingContract

#: ``max_message_size`` of the communicators here: low, so that the battery's message over
#: the limit is quick to build and send.
MESSAGE_LIMIT = 8 * 1024 * 1024


def rmq_options(namespace: str) -> dict[str, Any]:
    return {
        "message_exchange": f"{namespace}.messages",
        "task_exchange": f"{namespace}.tasks",
        "task_queue": f"{namespace}.tasks",
        "testing_mode": True,
        "max_message_size": MESSAGE_LIMIT,
        # no decode budget: the battery sends multi-megabyte YAML bodies that must arrive;
        # the budget itself is checked by tests/faults/test_memory_bound.py
        "max_decode_memory": None,
        # task queues as this library declares them: they dead-letter (a kiwipy 0.9 queue,
        # testing mode's default, does not, so an expired task would only be dropped)
        "task_queue_compat": False,
    }


def dead_letter_reader(channel: AbstractChannel) -> Any:
    """:returns: a ``dead_letters`` reader for the contract (``tests/contract.py``): the
    reason header of each message parked in ``<queue>.dead``, taken off it."""

    async def dead_letters(queue: str) -> list[Any]:
        parked = []
        while True:
            message = await channel.basic_get(f"{queue}.dead", no_ack=True)
            if not isinstance(message.delivery, spec.Basic.GetOk):
                return parked
            headers = message.header.properties.headers or {}
            parked.append(headers.get("x-kiwipy-reason") or headers.get("x-death"))

    return dead_letters


class TestRmqCommunicatorContract(CommunicatorContract):
    capabilities = ALL
    message_limit = MESSAGE_LIMIT

    @pytest.fixture
    async def transport(self, names, rmq_uri, raw_channel):
        async def factory() -> rmq.RmqCommunicator:
            return await rmq.async_connect(rmq_uri, **rmq_options(names.prefix))

        reader = dead_letter_reader(raw_channel)
        async with AsyncTransport(
            factory, namespace=names.prefix, dead_letters=reader
        ) as transport:
            yield transport


class TestRmqThreadCommunicatorContract(CommunicatorContract):
    """Without OpenTelemetry, as installed without the otel extra: broadcasts are handed to
    the subscribers' workers from the loop without a task (kiwipy._broadcasts.hand_over);
    with tracing they take a task (TestRmqThreadTracing)."""

    capabilities = ALL
    message_limit = MESSAGE_LIMIT

    @pytest.fixture(autouse=True)
    def _without_tracing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(_tracing, "ENABLED", False)

    @pytest.fixture
    async def transport(self, names, rmq_uri, raw_channel):
        def factory() -> rmq.RmqThreadCommunicator:
            return rmq.connect(rmq_uri, **rmq_options(names.prefix))

        reader = dead_letter_reader(raw_channel)
        async with BlockingTransport(
            factory, namespace=names.prefix, dead_letters=reader
        ) as transport:
            yield transport


class _RmqTracing(TracingContract):
    system = "rabbitmq"


class TestRmqTracing(_RmqTracing):
    @pytest.fixture
    async def transport(self, names, rmq_uri):
        async def factory() -> rmq.RmqCommunicator:
            return await rmq.async_connect(rmq_uri, **rmq_options(names.prefix))

        async with AsyncTransport(factory, namespace=names.prefix) as transport:
            yield transport


class TestRmqThreadTracing(_RmqTracing):
    @pytest.fixture
    async def transport(self, names, rmq_uri):
        def factory() -> rmq.RmqThreadCommunicator:
            return rmq.connect(rmq_uri, **rmq_options(names.prefix))

        async with BlockingTransport(factory, namespace=names.prefix) as transport:
            yield transport
