# kiwipy.rmq: the RabbitMQ transport, on aio-pika. RmqCommunicator is the asyncio core;
# RmqThreadCommunicator the blocking facade over it (one private loop thread). Wire-compatible
# with kiwipy 0.9: same exchanges, queues, routing keys, properties and YAML bodies.
"""The RabbitMQ transport: asyncio and thread communicators, task queues and helpers."""

from __future__ import annotations

from . import communicator, defaults, messages, protocol, tasks, threadcomms, utils
from .communicator import RmqCommunicator, async_connect
from .tasks import RmqIncomingTask, RmqTaskPublisher, RmqTaskQueue, RmqTaskSubscriber
from .threadcomms import RmqThreadCommunicator, RmqThreadTaskQueue, connect

# kiwipy 0.9's ``rmq.__all__`` (tasks + communicator + threadcomms + utils), in its order.
__all__ = (
    "RmqTaskSubscriber",
    "RmqTaskPublisher",
    "RmqTaskQueue",
    "RmqIncomingTask",
    "RmqCommunicator",
    "async_connect",
    "RmqThreadCommunicator",
    "RmqThreadTaskQueue",
    "connect",
)

_SUBMODULES = (communicator, defaults, messages, protocol, tasks, threadcomms, utils)
