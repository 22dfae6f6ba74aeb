"""The blocking RabbitMQ communicator: :class:`RmqThreadCommunicator` and :func:`connect`.

A thin subclass of the generic thread facade (:mod:`kiwipy._thread`), which runs one
:class:`~kiwipy.rmq.RmqCommunicator` on a private event loop thread and already does the
closed check, the call timeout, the future conversions and the subscriber wrapping. This
module only adds what is RabbitMQ-specific: the constructor kiwipy 0.9 had, the
``connect`` functions, ``server_properties`` and the connection callbacks.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable, cast

import aio_pika
from typing_extensions import Unpack

from .. import exceptions
from .._thread import ThreadCommunicator, ThreadIncomingTask, ThreadTaskQueue
from ..communications import AsyncCommunicator
from ._options import ConnectionFactory, ConnectionParams, RmqOptions, resolve_options
from .communicator import RmqCommunicator, async_connect

__all__ = (
    "RmqThreadCommunicator",
    "RmqThreadIncomingTask",
    "RmqThreadTaskQueue",
    "ThreadFuture",
    "connect",
)

#: kiwipy 0.9's name here for the futures the thread communicator returns.
ThreadFuture = concurrent.futures.Future

#: Seconds a blocking send may take beyond ``recovery_timeout`` (the core's own bound).
_SEND_MARGIN = 1.0

#: The blocking view of a named task queue (kiwipy 0.9's name).
RmqThreadTaskQueue = ThreadTaskQueue
#: The blocking view of a task taken in pull mode (kiwipy 0.9's name).
RmqThreadIncomingTask = ThreadIncomingTask


class RmqThreadCommunicator(ThreadCommunicator):
    """A blocking RabbitMQ communicator; its I/O runs on a private event loop thread, so
    heartbeats go on whatever the caller does, and it works the same from scripts, from
    inside a running asyncio loop and in Jupyter.

    :param connection_params: a URL or keyword arguments for *connection_factory* (see
        :func:`~kiwipy.rmq.async_connect`).
    :param connection_factory: makes the aio-pika connection (reconnecting by default).
    :param options: see :class:`~kiwipy.rmq.RmqCommunicator`; ``async_task_timeout``
        (default :attr:`TASK_TIMEOUT`) bounds every blocking call except the sends
        (``task_send``, ``rpc_send``, ``broadcast_send``), which wait for a lost connection
        up to ``recovery_timeout`` and then raise :class:`~kiwipy.ConnectionLost`, and the
        batches (``*_send_many``: the same plus 1 ms per message). A call's own timeout
        (``next_task(timeout=...)``) comes on top of it.
    """

    #: Default seconds a blocking call may take.
    TASK_TIMEOUT = 5.0

    def __init__(
        self,
        connection_params: ConnectionParams = None,
        connection_factory: ConnectionFactory = aio_pika.connect_robust,
        **options: Unpack[RmqOptions],
    ) -> None:
        resolved = resolve_options({"async_task_timeout": self.TASK_TIMEOUT, **options})
        timeout = resolved["async_task_timeout"]

        async def make_core() -> AsyncCommunicator:
            return await async_connect(connection_params, connection_factory, **options)

        super().__init__(make_core, timeout=timeout, name="RMQ communicator")
        # A send during an outage waits for the reconnection up to ``recovery_timeout`` and
        # then confirms or raises ConnectionLost: the facade must not cut it short with a
        # TimeoutError that says nothing about what happened (docs/guarantees.md).
        self._bridge.send_timeout = resolved["recovery_timeout"] + _SEND_MARGIN

    @classmethod
    def connect(
        cls,
        connection_params: ConnectionParams = None,
        connection_factory: ConnectionFactory = aio_pika.connect_robust,
        **options: Unpack[RmqOptions],
    ) -> RmqThreadCommunicator:
        """:returns: a connected communicator (same parameters as the constructor)."""
        return cls(connection_params, connection_factory, **options)

    @property
    def _rmq(self) -> RmqCommunicator:
        if self.is_closed():
            raise exceptions.CommunicatorClosed
        return cast(RmqCommunicator, self.core)

    @property
    def server_properties(self) -> dict[str, Any]:
        """The broker's properties (see :attr:`RmqCommunicator.server_properties`).

        :raises CommunicatorClosed: after :meth:`close` (kiwipy 0.9 raised AttributeError: B9).
        """
        return self._rmq.server_properties

    def add_close_callback(self, callback: Callable[..., Any], weak: bool = False) -> None:
        """Call ``callback(connection, exc)`` (on the loop thread) each time the connection
        closes. :raises CommunicatorClosed: after :meth:`close`."""
        core = self._rmq

        async def add() -> None:
            core.add_close_callback(callback, weak)

        self._bridge.call(add)

    def add_connection_callback(self, callback: Callable[[str], None]) -> None:
        """See :meth:`RmqCommunicator.add_connection_callback` (called on the loop thread:
        keep it short)."""
        core = self._rmq

        async def add() -> None:
            core.add_connection_callback(callback)

        self._bridge.call(add)


def connect(
    connection_params: ConnectionParams = None,
    connection_factory: ConnectionFactory = aio_pika.connect_robust,
    **options: Unpack[RmqOptions],
) -> RmqThreadCommunicator:
    """Connect a :class:`RmqThreadCommunicator` (what ``kiwipy.connect('amqp://...')`` does).

    Every option is accepted here too, ``queue_expires`` and ``async_task_timeout`` included
    (kiwipy 0.9 dropped them: bug B8).
    """
    return RmqThreadCommunicator.connect(connection_params, connection_factory, **options)
