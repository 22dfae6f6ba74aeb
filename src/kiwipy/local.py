"""``LocalCommunicator``: kiwipy 0.9's synchronous in-process communicator.

Every send calls the subscribers directly in the caller's thread and returns a future that is
already done. It has no queues: a task with no subscriber fails at once with
:class:`~kiwipy.UnroutableError` instead of waiting (kiwipy 0.9 returned a future that never
completed, bug B12). For queues, workers on other threads and the same semantics as RabbitMQ,
use :func:`kiwipy.connect` with ``memory://``.
"""

from __future__ import annotations

from typing import Any, Optional

from . import _deadlines, futures
from .communications import CommunicatorHelper

__all__ = ("LocalCommunicator",)


class LocalCommunicator(CommunicatorHelper):
    """A communicator that delivers every message synchronously to its own subscribers."""

    def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[futures.Future[Any]]:
        """Run *task* now; *timeout* is only what the subscriber's :func:`kiwipy.deadline`
        reports (it runs at once, so it never starts late, and its outcome is there)."""
        with _deadlines.running_until(_deadlines.absolute(_deadlines.check_timeout(timeout))):
            return self.fire_task(task, no_reply)

    def rpc_send(
        self, recipient_id: Any, msg: Any, *, timeout: Optional[float] = None
    ) -> futures.Future[Any]:
        """Call the subscriber now; *timeout*: as for :meth:`task_send`."""
        with _deadlines.running_until(_deadlines.absolute(_deadlines.check_timeout(timeout))):
            return self.fire_rpc(recipient_id, msg)

    def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        return self.fire_broadcast(
            body, sender=sender, subject=subject, correlation_id=correlation_id
        )
