"""The shapes of subscriber call-backs, shared by every interface
(re-exported by :mod:`kiwipy.communications`, kiwipy 0.9's path for them)."""

from __future__ import annotations

from typing import Any, Callable

__all__ = ("BroadcastSubscriber", "RpcSubscriber", "TaskSubscriber")

#: ``subscriber(communicator, msg)``; its return value (or exception) is the RPC's outcome.
RpcSubscriber = Callable[[Any, Any], Any]
#: ``subscriber(communicator, task)``; raise :class:`~kiwipy.TaskRejected` to pass it on.
TaskSubscriber = Callable[[Any, Any], Any]
#: ``subscriber(communicator, body, sender, subject, correlation_id)``, called positionally.
BroadcastSubscriber = Callable[[Any, Any, Any, Any, Any], Any]
