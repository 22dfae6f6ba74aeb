"""What a dead-lettered task says (its reason, since when) and the headers of a task sent back
from the dead (``requeue``) or set aside (``park``); pure functions, the same for RabbitMQ and
SQLite.

A requeued copy loses the dead-letter headers (``x-death``, ``x-kiwipy-reason``, ...) and any
lease headers, and ``x-kiwipy-requeued`` counts how many times it came back from the dead; a
parked one gets ``x-kiwipy-reason: parked-by-operator``.
"""

from __future__ import annotations

import datetime
import time
from typing import Any, Optional

__all__ = ("REQUEUED_HEADER", "dead_reason", "dead_since", "parked_headers", "requeued_headers")

REQUEUED_HEADER = "x-kiwipy-requeued"
_DROPPED_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", "x-kiwipy-")
_DROPPED = ("x-delivery-count",)


def dead_reason(headers: Optional[dict[str, Any]]) -> tuple[str, str]:
    """:returns: ``(reason, detail)`` of a dead-lettered message: kiwipy's
    ``x-kiwipy-reason`` for a parked task, else the broker's latest ``x-death`` entry
    (``expired``, ``delivery_limit``, ``rejected``, ``maxlen``)."""
    headers = headers or {}
    reason = headers.get("x-kiwipy-reason")
    if reason:
        return _text(reason), _text(headers.get("x-kiwipy-error", ""))
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        death = deaths[0]
        count = death.get("count", 1)
        return _text(death.get("reason", "unknown")), f"from {_text(death.get('queue', '?'))}" + (
            f" ({count} times)" if count and count > 1 else ""
        )
    return "unknown", ""


def dead_since(headers: Optional[dict[str, Any]]) -> Optional[float]:
    """:returns: when the message was dead-lettered or parked (seconds since the epoch)."""
    headers = headers or {}
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        when = deaths[0].get("time")
        if isinstance(when, datetime.datetime):
            return when.timestamp()
    parked = headers.get("x-kiwipy-parked-at")
    return float(parked) if isinstance(parked, (int, float)) else None


def parked_headers(headers: Optional[dict[str, Any]], queue: str) -> dict[str, Any]:
    """:returns: the headers of a waiting task an operator parks (``kiwipy dead park``)."""
    parked = dict(headers or {})
    parked.update(
        {
            "x-kiwipy-reason": "parked-by-operator",
            "x-kiwipy-original-queue": queue,
            "x-kiwipy-parked-at": int(time.time()),
        }
    )
    return parked


def requeued_headers(headers: Optional[dict[str, Any]]) -> dict[str, Any]:
    """:returns: the headers of a message sent back from the dead (module doc)."""
    headers = headers or {}
    kept = {
        key: value
        for key, value in headers.items()
        if not key.startswith(_DROPPED_PREFIXES) and key not in _DROPPED
    }
    previous = headers.get(REQUEUED_HEADER, 0)
    kept[REQUEUED_HEADER] = (previous if isinstance(previous, int) else 0) + 1
    return kept


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
