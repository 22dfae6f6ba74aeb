"""kiwipy's own connection metrics (issue 17): reconnections and the time to recover, counted
where connection events are emitted (``kiwipy.rmq.connection._events``)."""

from __future__ import annotations

import pytest

pytest.importorskip("aiormq")

from kiwipy.rmq.connection import _events
from tests.contract_tracing import otel_sdk


def _total(name: str) -> float:
    points = otel_sdk().metric_points(name)
    return sum(getattr(point, "value", None) or getattr(point, "count", 0) for point in points)


def test_a_reconnection_is_counted_with_its_recovery_time() -> None:
    otel_sdk()
    reconnections, recoveries = _total("kiwipy.reconnections"), _total("kiwipy.recovery.duration")
    events = _events.Events(lambda: "test connection")
    events.emit(_events.CONNECTED)
    events.emit(_events.DISCONNECTED, "broker gone")
    events.emit(_events.RESTORE_FAILED, "still gone")  # still down: one outage
    events.emit(_events.RECONNECTED)
    assert _total("kiwipy.reconnections") == reconnections + 1
    assert _total("kiwipy.recovery.duration") == recoveries + 1
    events.emit(_events.RECONNECTED)  # nothing was down: counted, no recovery time
    assert _total("kiwipy.recovery.duration") == recoveries + 1


def test_rpc_metrics_do_not_carry_the_identifier() -> None:
    """One time series for every RPC, not one per identifier (AiiDA has one per process)."""
    from kiwipy import _tracing

    made = [
        _tracing._metric_attributes(
            {
                "messaging.system": "rabbitmq",
                "messaging.destination.name": f"[rpc].{pk}",
                "kiwipy.message.kind": "rpc",
                "messaging.message.id": str(pk),
            }
        )
        for pk in range(3)
    ]
    assert all(attributes == made[0] for attributes in made)
    assert made[0]["messaging.destination.name"] == _tracing.RPC_DESTINATION
    task = _tracing._metric_attributes(
        {"messaging.destination.name": "kiwipy.tasks", "kiwipy.message.kind": "task"}
    )
    assert task["messaging.destination.name"] == "kiwipy.tasks"
