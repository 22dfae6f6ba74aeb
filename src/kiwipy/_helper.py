"""Subscriber bookkeeping for synchronous communicators: :class:`CommunicatorHelper`
(kiwipy 0.9's; re-exported by :mod:`kiwipy.communications`), and how a subscriber's
exception reaches the sender.
"""

from __future__ import annotations

from typing import Any, Optional

import shortuuid

from . import _unroutable, exceptions, futures
from ._blocking_interface import Communicator
from ._outcome import CANCELLED, from_exception
from ._raised import exception_text
from ._subscribers import BroadcastSubscriber, RpcSubscriber, TaskSubscriber

__all__ = ("CommunicatorHelper",)


class CommunicatorHelper(Communicator):
    """In-memory subscriber bookkeeping for synchronous communicators (kiwipy 0.9's helper).

    Subclasses implement ``task_send``, ``rpc_send`` and ``broadcast_send``, typically with
    :meth:`fire_task`, :meth:`fire_rpc` and :meth:`fire_broadcast`.
    """

    def __init__(self) -> None:
        self._task_subscribers: dict[Any, TaskSubscriber] = {}
        self._broadcast_subscribers: dict[Any, BroadcastSubscriber] = {}
        self._rpc_subscribers: dict[Any, RpcSubscriber] = {}
        self._closed = False

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._task_subscribers.clear()
        self._broadcast_subscribers.clear()
        self._rpc_subscribers.clear()

    def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> Any:
        return self._add(self._rpc_subscribers, "RPC", subscriber, identifier)

    def remove_rpc_subscriber(self, identifier: Any) -> None:
        self._remove(self._rpc_subscribers, identifier, f"Unknown subscriber '{identifier}'")

    def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        # kiwipy 0.9 checked the RPC dict here (bug B1); task ids are checked among tasks.
        return self._add(self._task_subscribers, "Task", subscriber, identifier)

    def remove_task_subscriber(self, identifier: Any) -> None:
        self._remove(self._task_subscribers, identifier, f"Unknown subscriber: '{identifier}'")

    def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> Any:
        return self._add(self._broadcast_subscribers, "Broadcast", subscriber, identifier)

    def remove_broadcast_subscriber(self, identifier: Any) -> None:
        message = f"Broadcast subscriber '{identifier}' unknown"
        self._remove(self._broadcast_subscribers, identifier, message)

    def fire_task(self, msg: Any, no_reply: bool = False) -> Optional[futures.Future[Any]]:
        """Run *msg* through the task subscribers in order; the first that does not raise
        :class:`~kiwipy.TaskRejected` decides the outcome.

        Unlike kiwipy 0.9 (bug B12) the future never hangs: with no subscriber it fails with
        :class:`~kiwipy.UnroutableError`, and with every subscriber rejecting it fails with
        :class:`~kiwipy.TaskRejected`.
        """
        self._ensure_open()
        future: futures.Future[Any] = futures.Future()
        if not self._task_subscribers:
            future.set_exception(exceptions.UnroutableError("no task subscriber"))
        for subscriber in list(self._task_subscribers.values()):
            try:
                future.set_result(subscriber(self, msg))
                break
            except exceptions.TaskRejected:
                continue
            except Exception as exc:
                _fail(future, exc)
                break
        else:
            if not future.done():
                future.set_exception(exceptions.TaskRejected("every task subscriber rejected"))
        return None if no_reply else future

    def fire_rpc(self, recipient_id: Any, msg: Any) -> futures.Future[Any]:
        """Call the RPC subscriber *recipient_id* synchronously.

        :raises UnroutableError: if there is none.
        """
        self._ensure_open()
        try:
            subscriber = self._rpc_subscribers[recipient_id]
        except KeyError:
            raise exceptions.UnroutableError(_unroutable.no_rpc_subscriber(recipient_id)) from None
        future: futures.Future[Any] = futures.Future()
        try:
            future.set_result(subscriber(self, msg))
        except Exception as exc:
            _fail(future, exc)
        return future

    def fire_broadcast(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        """Call every broadcast subscriber, with keyword arguments as kiwipy 0.9 did."""
        self._ensure_open()
        for subscriber in list(self._broadcast_subscribers.values()):
            subscriber(
                self, body=body, sender=sender, subject=subject, correlation_id=correlation_id
            )  # type: ignore[call-arg]
        return True

    def _ensure_open(self) -> None:
        if self.is_closed():
            raise exceptions.CommunicatorClosed

    def _add(self, registry: dict[Any, Any], kind: str, subscriber: Any, identifier: Any) -> Any:
        self._ensure_open()
        identifier = identifier or shortuuid.uuid()
        if identifier in registry:
            raise exceptions.DuplicateSubscriberIdentifier(f"{kind} identifier '{identifier}'")
        registry[identifier] = subscriber
        return identifier

    def _remove(self, registry: dict[Any, Any], identifier: Any, message: str) -> None:
        self._ensure_open()
        try:
            del registry[identifier]
        except KeyError:
            raise ValueError(message) from None


def _fail(future: futures.Future[Any], exc: BaseException) -> None:
    """End *future* as the subscriber that raised *exc* decided (:mod:`kiwipy._outcome`):
    cancelled for ``kiwipy.CancelledError``, else with the :class:`RemoteException`."""
    if from_exception(exc).kind == CANCELLED:
        future.cancel()
    else:
        future.set_exception(_remote_exception(exc))


def _remote_exception(exc: BaseException) -> exceptions.RemoteException:
    """:returns: the :class:`RemoteException` a sender sees for *exc* (B12: a message, not
    ``sys.exc_info()``)."""
    import traceback

    return exceptions.RemoteException(
        exception_text(exc),
        remote_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        remote_traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )
