"""The blocking interface every thread communicator implements: :class:`Communicator`
(kiwipy 0.9's; re-exported by :mod:`kiwipy.communications`, where its users import it).

Its methods return plain values and :class:`concurrent.futures.Future` objects and may be
called from any thread; the asyncio flavour is :mod:`kiwipy._async_interfaces`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any, Optional

from . import futures
from ._subscribers import BroadcastSubscriber, RpcSubscriber, TaskSubscriber

__all__ = ("Communicator",)


class Communicator(abc.ABC):
    """The blocking interface for sending and receiving tasks, RPCs and broadcasts.

    Use it as a context manager to close it on exit.
    """

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abc.abstractmethod
    def is_closed(self) -> bool:
        """:returns: ``True`` once the communicator was closed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Free every resource; later operations raise :class:`~kiwipy.CommunicatorClosed`.
        Calling it again does nothing."""

    @abc.abstractmethod
    def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> Any:
        """Receive RPCs sent to *identifier* (generated if ``None``).

        :returns: the identifier.
        :raises DuplicateSubscriberIdentifier: if the identifier is taken.
        """

    @abc.abstractmethod
    def remove_rpc_subscriber(self, identifier: Any) -> None:
        """:raises ValueError: if no RPC subscriber has this identifier."""

    @abc.abstractmethod
    def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        """Consume tasks from the default task queue. :returns: the subscriber's identifier."""

    @abc.abstractmethod
    def remove_task_subscriber(self, identifier: Any) -> None:
        """:raises ValueError: if no task subscriber has this identifier."""

    @abc.abstractmethod
    def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> Any:
        """Receive every broadcast (wrap *subscriber* in a :class:`~kiwipy.BroadcastFilter`
        to select some). :returns: the subscriber's identifier."""

    @abc.abstractmethod
    def remove_broadcast_subscriber(self, identifier: Any) -> None:
        """:raises ValueError: if no broadcast subscriber has this identifier."""

    @abc.abstractmethod
    def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[futures.Future[Any]]:
        """Queue *task* for a worker.

        :param timeout: seconds the task may take to finish: then its future fails with
            :class:`~kiwipy.DeadlineExceeded`, and a task no worker started by then never
            runs (``docs/concepts.md``). ``None`` (the default): no deadline.
        :returns: a future for the task's outcome, or ``None`` when *no_reply* is true.
        """

    def task_send_many(
        self, tasks: Iterable[Any], no_reply: bool = False, *, call_timeout: Optional[float] = None
    ) -> list[Optional[futures.Future[Any]]]:
        """Queue many tasks at once, with their publishes in flight together (much faster
        than one :meth:`task_send` after another, which each wait for their confirm).

        Each task goes on the wire exactly as :meth:`task_send` would send it. Returns once
        every task is confirmed by the broker.

        :param call_timeout: the deadline of each task, as ``timeout`` of :meth:`task_send`.
        :returns: one entry per task, in order: a future for its outcome, or ``None`` when
            *no_reply* is true.
        :raises EncodeError: if a task cannot be encoded (nothing is sent).
        :raises BatchSendError: if any task was not confirmed: its ``errors`` say which
            (and why), its ``futures`` hold the futures of the confirmed ones.
        :raises NotImplementedError: if this communicator cannot send batches.
        """
        raise NotImplementedError(f"{type(self).__name__} has no task_send_many")

    @abc.abstractmethod
    def rpc_send(
        self, recipient_id: Any, msg: Any, *, timeout: Optional[float] = None
    ) -> futures.Future[Any]:
        """Call the RPC subscriber *recipient_id* with *msg*.

        :param timeout: seconds the reply may take: then the future fails with
            :class:`~kiwipy.DeadlineExceeded`, and a request not started by then never is
            (``docs/concepts.md``). ``None`` (the default): no deadline.
        :returns: a future for the call's outcome.
        :raises UnroutableError: if nobody holds *recipient_id*.
        """

    def rpc_send_many(
        self, calls: Iterable[tuple[Any, Any]], *, call_timeout: Optional[float] = None
    ) -> list[futures.Future[Any]]:
        """Make many RPC calls at once, with their publishes in flight together (as
        :meth:`task_send_many` does for tasks).

        Each request goes on the wire exactly as :meth:`rpc_send` would send it. Returns once
        every request is confirmed by the broker. A call whose recipient nobody holds fails
        alone; any other failure stops the batch (the calls not sent yet fail too).

        :param calls: ``(recipient_id, msg)`` pairs.
        :param call_timeout: the deadline of each call, as ``timeout`` of :meth:`rpc_send`.
        :returns: one future per call, in order, for its outcome.
        :raises EncodeError: if a message cannot be encoded (nothing is sent).
        :raises BatchSendError: if any call failed: its ``errors`` say which (and why:
            :class:`~kiwipy.UnroutableError` for an unknown recipient), its ``futures`` hold
            the futures of the others (``None`` for the failed ones).
        :raises NotImplementedError: if this communicator cannot send batches.
        """
        raise NotImplementedError(f"{type(self).__name__} has no rpc_send_many")

    @abc.abstractmethod
    def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        """Send *body* to every broadcast subscriber. :returns: ``True`` once handed over
        (not an error when nobody listens)."""

    def broadcast_send_many(self, broadcasts: Iterable[tuple[Any, ...]]) -> None:
        """Send many broadcasts at once, with their publishes in flight together (as
        :meth:`task_send_many` does for tasks).

        Each broadcast goes on the wire exactly as :meth:`broadcast_send` would send it.
        Returns once every broadcast is confirmed by the broker (not an error when nobody
        listens). Any failure stops the batch (the broadcasts not sent yet fail too); nothing
        is resent.

        :param broadcasts: tuples of :meth:`broadcast_send`'s positional arguments:
            ``(body,)``, ``(body, sender)``, ``(body, sender, subject)`` or
            ``(body, sender, subject, correlation_id)``.
        :raises TypeError: if an item is not a tuple of 1 to 4 elements (nothing is sent).
        :raises EncodeError: if a broadcast cannot be encoded (nothing is sent).
        :raises BatchSendError: if any broadcast was not confirmed: its ``errors`` say which
            (and why); its ``futures`` are ``None``, one per broadcast.
        :raises NotImplementedError: if this communicator cannot send batches.
        """
        raise NotImplementedError(f"{type(self).__name__} has no broadcast_send_many")
