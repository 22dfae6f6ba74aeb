"""The in-process transport: ``memory://`` communicators that share a :class:`MemoryBroker`.

It has the semantics of the RabbitMQ transport (``docs/architecture.md``) without a broker
process, so the same code and the same contract tests run on both:

* :class:`AsyncMemoryCommunicator` is the asyncio core (from :func:`async_connect`);
  :class:`MemoryCommunicator` is the blocking flavour (from :func:`connect` or
  ``kiwipy.connect('memory://')``), the shared thread facade over that core.
* ``memory://`` is the process's default broker and ``memory://NAME`` a named one; every
  communicator connected to one name shares its task queues, RPC identities and broadcasts,
  whatever thread or event loop it lives on.
* With an ``encoder`` every message (tasks, RPC requests, replies, broadcasts) is encoded when
  sent and decoded when received, so an unencodable message fails as it would on RabbitMQ.
  Without one, objects are passed by reference, like :class:`~kiwipy.LocalCommunicator`.

The broker is in ``kiwipy.memory._broker``, its task queues in ``kiwipy.memory._queues``
(the communicator's options in ``kiwipy.memory._options``);
the communicator, its task queues and pull-mode tasks are the shared core
(:mod:`kiwipy.core`), which this transport only configures.
"""

from __future__ import annotations

import threading
from typing import Any

from typing_extensions import Unpack

from .._thread import DEFAULT_TIMEOUT, ThreadCommunicator
from ..core import DEFAULT_TASK_QUEUE, AsyncBrokerCommunicator
from ..core import BrokerIncomingTask as MemoryIncomingTask
from ..core import BrokerTaskQueue as MemoryTaskQueue
from ._broker import MemoryBroker
from ._options import MemoryOptions, check_options

__all__ = (
    "DEFAULT_TASK_QUEUE",
    "SCHEME",
    "AsyncMemoryCommunicator",
    "MemoryBroker",
    "MemoryCommunicator",
    "MemoryIncomingTask",
    "MemoryOptions",
    "MemoryTaskQueue",
    "async_connect",
    "broker_name",
    "connect",
    "drop_broker",
    "get_broker",
)

#: The uri scheme of this transport.
SCHEME = "memory://"


class AsyncMemoryCommunicator(AsyncBrokerCommunicator):
    """The asyncio communicator of the in-process transport: the shared core
    (:class:`kiwipy.core.AsyncBrokerCommunicator`) on a :class:`MemoryBroker`.

    :param broker: the broker to connect to (see :func:`get_broker`).
    :param options: see :class:`MemoryOptions`.
    """

    def __init__(self, broker: MemoryBroker, **options: Unpack[MemoryOptions]) -> None:
        check_options(options)
        super().__init__(broker, options)
        self._memory_broker = broker

    @property
    def broker(self) -> MemoryBroker:
        """The broker this communicator is connected to."""
        return self._memory_broker


# Named brokers of this process

_BROKERS: dict[str, MemoryBroker] = {}
_BROKERS_LOCK = threading.Lock()


def get_broker(name: str = "") -> MemoryBroker:
    """:returns: the broker called *name* (``''`` is the default one), created on first use."""
    with _BROKERS_LOCK:
        broker = _BROKERS.get(name)
        if broker is None:
            broker = _BROKERS[name] = MemoryBroker(name)
        return broker


def drop_broker(name: str) -> None:
    """Forget the broker called *name*: the next :func:`get_broker` creates a fresh one.
    Communicators still connected to it keep working among themselves."""
    with _BROKERS_LOCK:
        _BROKERS.pop(name, None)


def broker_name(uri: str) -> str:
    """:returns: the broker name in a ``memory://[NAME]`` *uri*.

    :raises ValueError: if *uri* is not a ``memory://`` uri, or has query parameters (this
        transport reads none, so one is a mistake, not a setting to ignore).
    """
    if not uri.startswith(SCHEME):
        raise ValueError(f"not a memory uri: '{uri}' (expected memory://[name])")
    name, _, query = uri[len(SCHEME) :].partition("?")
    if query:
        names = [repr(part.partition("=")[0]) for part in query.split("&")]
        plural = "s" if len(names) > 1 else ""
        raise ValueError(
            f"unknown URL parameter{plural} {', '.join(names)}: memory:// URLs take no parameters"
        )
    return name.strip("/")


async def async_connect(
    uri: str = SCHEME, **options: Unpack[MemoryOptions]
) -> AsyncMemoryCommunicator:
    """:returns: an :class:`AsyncMemoryCommunicator` connected on the running loop to the
    broker named in *uri* (``memory://`` or ``memory://NAME``).

    :param options: see :class:`MemoryOptions`.
    :raises ValueError: if *uri* is not a ``memory://`` uri.
    """
    communicator = AsyncMemoryCommunicator(get_broker(broker_name(uri)), **options)
    await communicator.connect()
    return communicator


class MemoryCommunicator(ThreadCommunicator):
    """The blocking in-process communicator: :class:`AsyncMemoryCommunicator` on a private
    loop thread, behind the shared thread facade. Subscribers receive this communicator.

    :param uri: ``memory://`` or ``memory://NAME``.
    :param async_task_timeout: seconds any call may take before :data:`kiwipy.TimeoutError`.
    :param options: see :class:`MemoryOptions`.
    """

    def __init__(
        self,
        uri: str = SCHEME,
        *,
        async_task_timeout: float = DEFAULT_TIMEOUT,
        **options: Unpack[MemoryOptions],
    ) -> None:
        broker_name(uri)  # fail early, on the caller's thread

        async def create() -> AsyncMemoryCommunicator:
            return await async_connect(uri, **options)

        super().__init__(create, timeout=async_task_timeout, name=f"kiwipy {uri}")


def connect(
    uri: str = SCHEME, *, async_task_timeout: float = DEFAULT_TIMEOUT, **options: Any
) -> MemoryCommunicator:
    """:returns: a :class:`MemoryCommunicator`; what ``kiwipy.connect('memory://...')`` calls.

    :param options: see :class:`MemoryOptions`.
    """
    return MemoryCommunicator(uri, async_task_timeout=async_task_timeout, **options)
