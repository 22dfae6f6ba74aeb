"""The interfaces every communicator implements, and :func:`connect`.

Two flavours share one behaviour (checked by the contract tests in ``tests/contract.py``):

* :class:`Communicator` is the blocking interface of kiwipy 0.9: methods return plain values
  and :class:`concurrent.futures.Future` objects, usable from any thread.
* :class:`AsyncCommunicator` is the asyncio core each transport implements once; its methods
  are coroutines and its futures are :class:`asyncio.Future` objects. The thread
  communicators are a thin facade over it (``kiwipy._thread``).

Subscriber return values, for every communicator: a plain value is the result; an
:class:`Exception` becomes :class:`~kiwipy.exceptions.RemoteException` at the sender; a
returned future (asyncio or concurrent, possibly resolving to further futures) becomes one
nested future per level at the sender.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import shortuuid

from . import _connect, _unroutable, exceptions, futures
from ._outcome import CANCELLED, from_exception
from ._raised import exception_text

# kiwipy 0.9's ``communications`` did ``from .exceptions import *``, and its clients import the
# exceptions from here (aiida-core: ``from kiwipy.communications import UnroutableError``;
# plumpy: ``communications.TaskRejected``): the same objects, re-exported by name.
from .exceptions import (
    CommunicatorClosed,
    DeliveryFailed,
    DuplicateSubscriberIdentifier,
    InvalidStateError,
    QueueEmpty,
    RemoteException,
    TaskRejected,
    TimeoutError,
    UnroutableError,
)

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

__all__ = (
    "AsyncCommunicator",
    "AsyncIncomingTask",
    "AsyncTaskQueue",
    "BroadcastSubscriber",
    "Communicator",
    "CommunicatorClosed",
    "CommunicatorHelper",
    "DeliveryFailed",
    "DuplicateSubscriberIdentifier",
    "InvalidStateError",
    "QueueEmpty",
    "RemoteException",
    "RpcSubscriber",
    "TaskRejected",
    "TaskSubscriber",
    "TimeoutError",
    "UnroutableError",
    "connect",
)

#: ``subscriber(communicator, msg)``; its return value (or exception) is the RPC's outcome.
RpcSubscriber = Callable[[Any, Any], Any]
#: ``subscriber(communicator, task)``; raise :class:`~kiwipy.TaskRejected` to pass it on.
TaskSubscriber = Callable[[Any, Any], Any]
#: ``subscriber(communicator, body, sender, subject, correlation_id)``, called positionally.
BroadcastSubscriber = Callable[[Any, Any, Any, Any, Any], Any]


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


class AsyncIncomingTask(abc.ABC):
    """A task taken from a queue in pull mode (``next_task`` or ``async for``).

    ``state`` is one of ``'pending'``, ``'processing'``, ``'finished'``, ``'requeued'``.
    """

    @property
    @abc.abstractmethod
    def body(self) -> Any:
        """The task as sent."""

    @property
    @abc.abstractmethod
    def no_reply(self) -> bool:
        """Whether the sender asked for no reply."""

    @property
    @abc.abstractmethod
    def state(self) -> str:
        """The task's state."""

    @abc.abstractmethod
    def process(self) -> asyncio.Future[Any]:
        """Start processing: resolve the returned future with the outcome (cancelling it
        cancels the sender's future and finishes the task). If the future is
        garbage-collected unresolved, the task is requeued.

        :raises InvalidStateError: unless the task is pending.
        """

    @abc.abstractmethod
    async def requeue(self) -> None:
        """Give the task back to the queue for someone else.

        :raises InvalidStateError: unless the task is pending or processing.
        """

    @abc.abstractmethod
    def processing(self) -> AbstractAsyncContextManager[asyncio.Future[Any]]:
        """Async context manager yielding the outcome future; an exception in the block
        becomes the task's exception (and is re-raised); an unresolved outcome at exit
        requeues the task."""


class AsyncTaskQueue(abc.ABC):
    """A named task queue, for sending and for consuming in push or pull mode."""

    @abc.abstractmethod
    async def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[asyncio.Future[Any]]:
        """Queue *task*; see :meth:`Communicator.task_send`."""

    @abc.abstractmethod
    async def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        """Consume tasks with *subscriber*. :returns: its identifier."""

    @abc.abstractmethod
    async def remove_task_subscriber(self, identifier: Any) -> None:
        """:raises ValueError: for an unknown identifier."""

    @abc.abstractmethod
    def next_task(
        self, no_ack: bool = False, fail: bool = True, timeout: Optional[float] = None
    ) -> AbstractAsyncContextManager[Optional[AsyncIncomingTask]]:
        """Async context manager yielding the next task (pull mode).

        :param timeout: seconds to wait for a task to arrive; ``None`` (the default, as in
            kiwipy 0.9): take one only if the queue holds one now.
        :raises QueueEmpty: if none arrives within *timeout* and *fail* is true (otherwise
            it yields ``None``). A task still pending at exit is requeued.
        """

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[AsyncIncomingTask]:
        """Iterate over the tasks waiting in the queue; tasks left pending are requeued when
        the iteration ends."""


class AsyncCommunicator(abc.ABC):
    """The asyncio core of a transport. Methods mirror :class:`Communicator` as coroutines
    and return :class:`asyncio.Future` objects; see there for their contracts."""

    @property
    @abc.abstractmethod
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this communicator runs on."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect (or reconnect); does nothing if already connected."""

    @abc.abstractmethod
    async def disconnect(self) -> None:
        """Close everything; later operations raise :class:`~kiwipy.CommunicatorClosed`."""

    async def close(self) -> None:
        """The same as :meth:`disconnect`, under the name the thread communicators use
        (:meth:`Communicator.close`), so code moving between the two keeps working."""
        await self.disconnect()

    @abc.abstractmethod
    def connected(self) -> bool:
        """:returns: whether the communicator is connected."""

    async def __aenter__(self) -> AsyncCommunicator:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    @abc.abstractmethod
    async def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> Any:
        """See :meth:`Communicator.add_rpc_subscriber`."""

    @abc.abstractmethod
    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        """See :meth:`Communicator.remove_rpc_subscriber`."""

    @abc.abstractmethod
    async def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        """See :meth:`Communicator.add_task_subscriber`."""

    @abc.abstractmethod
    async def remove_task_subscriber(self, identifier: Any) -> None:
        """See :meth:`Communicator.remove_task_subscriber`."""

    @abc.abstractmethod
    async def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> Any:
        """See :meth:`Communicator.add_broadcast_subscriber`."""

    @abc.abstractmethod
    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        """See :meth:`Communicator.remove_broadcast_subscriber`."""

    @abc.abstractmethod
    async def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[asyncio.Future[Any]]:
        """See :meth:`Communicator.task_send`."""

    async def task_send_many(
        self,
        tasks: Iterable[Any],
        no_reply: bool = False,
        *,
        timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> list[Optional[asyncio.Future[Any]]]:
        """See :meth:`Communicator.task_send_many`.

        :param timeout: seconds the batch may take; when they run out no further message is
            sent and :class:`~kiwipy.BatchSendError` reports each message not confirmed by
            then (with :data:`~kiwipy.TimeoutError` for one written: it may have gone out,
            so its reply future is kept). ``None``: no limit but the transport's own.
        :param call_timeout: the deadline of each task, as ``timeout`` of :meth:`task_send`.
        """
        raise NotImplementedError(f"{type(self).__name__} has no task_send_many")

    @abc.abstractmethod
    async def rpc_send(
        self, recipient_id: Any, msg: Any, *, timeout: Optional[float] = None
    ) -> asyncio.Future[Any]:
        """See :meth:`Communicator.rpc_send`."""

    async def rpc_send_many(
        self,
        calls: Iterable[tuple[Any, Any]],
        *,
        timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> list[asyncio.Future[Any]]:
        """See :meth:`Communicator.rpc_send_many` (*timeout*, *call_timeout*: as for
        :meth:`task_send_many`)."""
        raise NotImplementedError(f"{type(self).__name__} has no rpc_send_many")

    @abc.abstractmethod
    async def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> Any:
        """See :meth:`Communicator.broadcast_send`; returns a true value once confirmed."""

    async def broadcast_send_many(
        self, broadcasts: Iterable[tuple[Any, ...]], *, timeout: Optional[float] = None
    ) -> None:
        """See :meth:`Communicator.broadcast_send_many` (*timeout*: as for
        :meth:`task_send_many`)."""
        raise NotImplementedError(f"{type(self).__name__} has no broadcast_send_many")

    @abc.abstractmethod
    async def task_queue(
        self, queue_name: str, prefetch_size: int = 0, prefetch_count: int = 0
    ) -> AsyncTaskQueue:
        """:returns: the task queue *queue_name*, declared if needed."""


#: The URI :func:`connect` uses when given none (kiwipy 0.9's ``communicate.DEFAULT_COMM_URI``).
DEFAULT_COMM_URI = "amqp://guest:guest@127.0.0.1/"


def connect(uri: Union[str, Sequence[str]] = DEFAULT_COMM_URI, **kwargs: Any) -> Communicator:
    """Connect a thread communicator, with the transport registered for the URL's scheme.

    :param uri: ``amqp://`` or ``amqps://`` for RabbitMQ (the keyword arguments go to
        :func:`kiwipy.rmq.connect`), or ``memory://[name]`` for the in-process transport
        (communicators connected to the same name share queues; see
        :func:`kiwipy.memory.connect`). The nodes of a RabbitMQ cluster may be given as
        several hosts in one URL (``amqp://u:p@host1:5672,host2:5672/``) or as a list of
        URLs (docs/cluster.md). A third-party transport adds its scheme with
        :func:`kiwipy.register_scheme` or the ``kiwipy.transports`` entry point group.
    :raises ValueError: for any other scheme.
    """
    # The registry imports the transport on first use: these interfaces never import one.
    communicator: Communicator = _connect.open_uri(uri, **kwargs)
    return communicator
