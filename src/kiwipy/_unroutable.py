"""The words of an :class:`~kiwipy.UnroutableError`, the same on every transport.

Each transport finds out in its own way that nobody can receive a message (RabbitMQ returns it
with ``NO_ROUTE``, the in-process broker looks its tables up), but the user reads one sentence
naming the recipient, whichever transport raised it (issue 19).
"""

from __future__ import annotations

from typing import Any

__all__ = ("for_routing_key", "no_queue", "no_rpc_subscriber")

#: The routing key prefix of RPCs (kiwipy 0.9's ``[rpc].<identifier>``).
_RPC_PREFIX = "[rpc]."


def no_rpc_subscriber(identifier: Any) -> str:
    """:returns: why an RPC to *identifier* cannot be delivered."""
    return f"no subscriber with RPC identifier {str(identifier)!r}"


def no_queue(queue: str, exchange: str = "") -> str:
    """:returns: why a message for the queue *queue* cannot be delivered: a task (through
    the task *exchange*) or a reply (*exchange* ``''``, the default exchange)."""
    if not exchange:
        return f"no queue named {queue!r} (a reply whose requester has gone?)"
    return f"no task queue bound for {queue!r} on exchange {exchange!r}"


def for_routing_key(routing_key: str, exchange: str) -> str:
    """:returns: why a message published to *exchange* with *routing_key* was returned."""
    if routing_key.startswith(_RPC_PREFIX):
        return no_rpc_subscriber(routing_key[len(_RPC_PREFIX) :])
    return no_queue(routing_key, exchange)
