"""Broker names for one test, so tests never share an exchange or a queue."""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ("BrokerNames",)


class BrokerNames:
    """A message exchange, a task exchange and a task queue no other test uses, under
    ``<kind>.<random>``, and the communicator options that select them.

    :param defaults: options every :meth:`options` call includes (before its *extra*).
    """

    def __init__(self, kind: str, **defaults: Any) -> None:
        self.prefix = f"{kind}.{uuid.uuid4().hex[:10]}"
        self.message_exchange = f"{self.prefix}.messages"
        self.task_exchange = f"{self.prefix}.tasks"
        self.task_queue = f"{self.prefix}.queue"
        self._defaults = defaults

    def options(self, **extra: Any) -> dict[str, Any]:
        return {
            "message_exchange": self.message_exchange,
            "task_exchange": self.task_exchange,
            "task_queue": self.task_queue,
            **self._defaults,
            **extra,
        }
