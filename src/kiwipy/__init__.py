# kiwipy: robust messaging for scientific workflows. Tasks (durable, acknowledged when done,
# results back as futures), RPC and broadcasts behind one Communicator interface, over an
# in-process transport or RabbitMQ. A drop-in replacement for kiwipy 0.9's public API.
"""Robust messaging (tasks, RPC, broadcasts) for scientific workflows."""

from __future__ import annotations

import logging

from . import communicate, communications, encoders, exceptions, filters, futures, local, utils
from ._connect import register_scheme
from ._deadlines import deadline
from .communications import (
    AsyncCommunicator,
    BroadcastSubscriber,
    Communicator,
    CommunicatorHelper,
    RpcSubscriber,
    TaskSubscriber,
    connect,
)
from .exceptions import (
    AccessRefused,
    BatchSendError,
    CommunicatorClosed,
    ConnectFailed,
    ConnectionLost,
    DeadlineExceeded,
    DecodeBudgetExceeded,
    DecodeError,
    DeliveryFailed,
    DuplicateSubscriberIdentifier,
    EncodeError,
    EncodingError,
    InvalidName,
    InvalidStateError,
    KiwiError,
    MessageTooLarge,
    NetworkFilesystemError,
    PublishNacked,
    QueueEmpty,
    RemoteException,
    ReplyLost,
    StorageError,
    TaskRejected,
    TimeoutError,
    TlsError,
    UnroutableError,
)
from .filters import BroadcastFilter
from .futures import (
    CancelledError,
    Future,
    as_completed,
    capture_exceptions,
    chain,
    copy_future,
    wait,
)
from .local import LocalCommunicator
from .utils import EventHelper

__version__ = "1.0.0.dev0"

__all__ = (
    "AccessRefused",
    "AsyncCommunicator",
    "BatchSendError",
    "BroadcastFilter",
    "BroadcastSubscriber",
    "CancelledError",
    "Communicator",
    "CommunicatorClosed",
    "CommunicatorHelper",
    "ConnectFailed",
    "ConnectionLost",
    "DeadlineExceeded",
    "DecodeBudgetExceeded",
    "DecodeError",
    "DeliveryFailed",
    "DuplicateSubscriberIdentifier",
    "EncodeError",
    "EncodingError",
    "EventHelper",
    "Future",
    "InvalidName",
    "InvalidStateError",
    "KiwiError",
    "LocalCommunicator",
    "MessageTooLarge",
    "NetworkFilesystemError",
    "PublishNacked",
    "QueueEmpty",
    "StorageError",
    "RemoteException",
    "ReplyLost",
    "RpcSubscriber",
    "TaskRejected",
    "TaskSubscriber",
    "TimeoutError",
    "TlsError",
    "UnroutableError",
    "as_completed",
    "capture_exceptions",
    "chain",
    "communicate",
    "communications",
    "connect",
    "copy_future",
    "deadline",
    "encoders",
    "exceptions",
    "filters",
    "futures",
    "local",
    "register_scheme",
    "utils",
    "wait",
)

logging.getLogger(__name__).addHandler(logging.NullHandler())
# kiwipy 0.9 defined its own ``NullHandler`` class here; the standard library's does the same.
NullHandler = logging.NullHandler
