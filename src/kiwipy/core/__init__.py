"""The transport-neutral core of the embedded transports.

A transport that keeps its own messages (in this process: :mod:`kiwipy.memory`; in a file
shared by processes: :mod:`kiwipy.sqlite`) supplies a :class:`Broker`, which only stores,
delivers, acknowledges and wakes; :class:`AsyncBrokerCommunicator` does everything else,
written once: subscribers and their outcomes (:mod:`kiwipy._outcome`), the task life cycle in
push and pull mode (reply before acknowledgement, requeue, ``TaskRejected``), reply
correlation and waiting, deadlines, cancels and tracing.

Modules: ``_broker`` (the broker protocol and the message objects), ``_communicator`` (the
communicator, made of the parts below), ``_codec`` (encoding, decoding and tracing of
bodies), ``_sending`` (what is sent, and the replies waited for), ``_rpc`` (RPC subscribers
and the calls they handle), ``_receiving`` (broadcast subscribers), ``_jobs`` (the asyncio
tasks subscribers run in) and ``_tasks`` (task queues, pull-mode tasks); reply shapes are in
``kiwipy._replies``.
"""

from __future__ import annotations

from ._broker import Broker, Connection, Consumer, Delivery, Message, Payload
from ._communicator import DEFAULT_TASK_QUEUE, AsyncBrokerCommunicator
from ._tasks import BrokerIncomingTask, BrokerTaskQueue

__all__ = (
    "DEFAULT_TASK_QUEUE",
    "AsyncBrokerCommunicator",
    "Broker",
    "BrokerIncomingTask",
    "BrokerTaskQueue",
    "Connection",
    "Consumer",
    "Delivery",
    "Message",
    "Payload",
)
