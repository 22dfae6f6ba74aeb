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

This is kiwipy 0.9's module and its users' import path; the pieces are defined in private
modules, one responsibility each: the subscriber shapes (``kiwipy._subscribers``), the
blocking interface (``kiwipy._blocking_interface``), :class:`CommunicatorHelper`
(``kiwipy._helper``) and the asyncio interfaces (``kiwipy._async_interfaces``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

from . import _connect
from ._async_interfaces import AsyncCommunicator, AsyncIncomingTask, AsyncTaskQueue
from ._blocking_interface import Communicator
from ._helper import CommunicatorHelper
from ._subscribers import BroadcastSubscriber, RpcSubscriber, TaskSubscriber

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


# The public classes keep the module kiwipy 0.9 defines them in (their reprs, pickles by
# reference and the API docs say kiwipy.communications), wherever their code lives.
for _public in (Communicator, CommunicatorHelper, AsyncCommunicator, AsyncTaskQueue,
                AsyncIncomingTask):  # fmt: skip
    _public.__module__ = __name__
del _public
