"""A real outage in the metrics (issue 17): a TCP cut counts one reconnection and records its
time to recover, close to what the connection events say."""

from __future__ import annotations

import time

import pytest

from kiwipy import rmq

from ..contract_tracing import otel_sdk
from ._scenario import Events, Names
from .proxy import TcpProxy

WAIT = 10.0
pytestmark = pytest.mark.integration


def _points(name: str) -> list:
    return otel_sdk().metric_points(name)


async def test_a_cut_is_one_reconnection_with_its_recovery_time(proxy: TcpProxy) -> None:
    otel_sdk()
    before = sum(point.value for point in _points("kiwipy.reconnections"))
    recorded = sum(point.count for point in _points("kiwipy.recovery.duration"))
    seconds = sum(point.sum for point in _points("kiwipy.recovery.duration"))
    comm = await rmq.async_connect(proxy.url, **Names().options())
    events = Events()
    comm.add_connection_callback(events)
    try:
        await comm.add_task_subscriber(lambda _c, task: task)
        cut_at = time.monotonic()
        proxy.cut()
        back_at = await events.wait_for("reconnected", WAIT, cut_at)
    finally:
        await comm.disconnect()
    assert sum(point.value for point in _points("kiwipy.reconnections")) == before + 1
    histogram = _points("kiwipy.recovery.duration")
    assert sum(point.count for point in histogram) == recorded + 1
    recovered = sum(point.sum for point in histogram) - seconds
    # measured from the 'disconnected' event, so at most the time since the cut
    assert 0 < recovered <= back_at - cut_at + 0.1
