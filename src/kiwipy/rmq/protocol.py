"""The kiwipy wire protocol, free of I/O: message shapes, routing keys and reply bodies.

Nothing here imports asyncio or aio-pika (rule: protocol stays pure; see ``tests/unit``).
What goes on the wire is byte-compatible with kiwipy 0.9 (api doc sections 7 and 8):

* a task body is the pair ``(task, no_reply)``;
* a broadcast body is ``{'body', 'sender', 'subject', 'correlation_id'}``;
* a reply body is one of ``{'result': v}``, ``{'exception': text}``, ``{'pending': None}``,
  ``{'cancelled': text}``; task replies also carry ``'host': {'hostname', 'pid'}``.

Replies from this library add two keys kiwipy 0.9 ignores: ``'exception_type'`` and
``'traceback'`` next to ``'exception'``, so a :class:`~kiwipy.RemoteException` can say what
was raised and where. A reply telling the requester no answer will come (the subscriber was
removed or closed before it answered, the answer was refused) also carries ``'lost'``: this
library's requesters raise :class:`~kiwipy.ReplyLost` for it, kiwipy 0.9's read its
``'exception'``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from collections.abc import Mapping
from typing import Any, NamedTuple

from .. import _broadcasts, _limits
from .._replies import (
    CANCELLED_KEY,
    EXCEPTION_KEY,
    EXCEPTION_TYPE_KEY,
    LOST_KEY,
    PENDING_KEY,
    RESULT_KEY,
    TRACEBACK_KEY,
    MalformedMessage,
    Reply,
    cancelled_response,
    decode_reply,
    exception_response,
    lost_response,
    pending_response,
    result_response,
)

__all__ = (
    "BROADCAST_TOPIC",
    "CANCELLED_KEY",
    "EXCEPTION_KEY",
    "EXCEPTION_TYPE_KEY",
    "HOSTNAME_KEY",
    "HOST_KEY",
    "LOST_KEY",
    "PENDING_KEY",
    "PID_KEY",
    "RESULT_KEY",
    "RPC_TOPIC",
    "TRACEBACK_KEY",
    "Broadcast",
    "MalformedMessage",
    "Reply",
    "TaskBody",
    "add_host_info",
    "cancelled_response",
    "decode_broadcast",
    "decode_reply",
    "decode_task",
    "encode_broadcast",
    "encode_task",
    "exception_response",
    "get_host_info",
    "lost_response",
    "pending_response",
    "result_response",
    "rpc_queue_name",
    "rpc_routing_key",
)

BROADCAST_TOPIC = "[broadcast]"
RPC_TOPIC = _limits.RPC_TOPIC  # the naming rules depend on it

HOST_KEY = "host"
HOSTNAME_KEY = "hostname"
PID_KEY = "pid"


def rpc_routing_key(recipient_id: Any) -> str:
    """:returns: the routing key of RPCs to *recipient_id* (``[rpc].<id>``, kiwipy 0.9's).

    :raises InvalidName: if *recipient_id* breaks the naming rules (:mod:`kiwipy._limits`),
        which also makes sure the key is a short string that matches no other identifier.
    """
    return f"{RPC_TOPIC}.{_limits.rpc_identifier(recipient_id)}"


def rpc_queue_name(exchange: str, identifier: Any) -> str:
    """:returns: the exclusive queue that holds the RPC *identifier* on *exchange*:
    ``<exchange>.rpc.<identifier>``, or, when that is not a valid queue name (longer than an
    AMQP short string, or with characters AMQP clients refuse in queue names, such as
    non-ASCII letters), ``<exchange prefix>.rpc.<sha256 of it>``: still one name per
    exchange and identifier.

    :raises InvalidName: if *identifier* breaks the naming rules (:mod:`kiwipy._limits`).
    """
    name = f"{exchange}.rpc.{_limits.rpc_identifier(identifier)}"
    data = name.encode("utf-8")
    if len(data) <= _limits.MAX_SHORT_STRING and _limits.is_amqp_queue_name(name):
        return name
    prefix = exchange.encode("utf-8")[:_PREFIX_BYTES].decode("utf-8", "ignore")
    return f"{prefix}.rpc.{hashlib.sha256(data).hexdigest()}"


#: Bytes of the exchange name kept in front of a hashed RPC queue name.
_PREFIX_BYTES = _limits.MAX_SHORT_STRING - len(".rpc.") - 64


# Tasks


class TaskBody(NamedTuple):
    """A task message: the task itself and whether its sender wants no reply."""

    task: Any
    no_reply: bool


def encode_task(task: Any, no_reply: bool) -> tuple[Any, bool]:
    """:returns: the object to encode for a task (a plain tuple, as kiwipy 0.9 sends)."""
    return (task, no_reply)


def decode_task(obj: Any) -> TaskBody:
    """:returns: the :class:`TaskBody` in a decoded task message.

    :raises MalformedMessage: unless *obj* is a pair (tuple, or list from JSON/msgpack).
    """
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise MalformedMessage(f"a task message is a (task, no_reply) pair, got {_describe(obj)}")
    return TaskBody(obj[0], bool(obj[1]))


# Broadcasts


@dataclasses.dataclass(frozen=True)
class Broadcast:
    """A broadcast message."""

    body: Any
    sender: Any = None
    subject: Any = None
    correlation_id: Any = None


def encode_broadcast(message: Broadcast) -> dict[str, Any]:
    """:returns: the object to encode for *message*."""
    return _broadcasts.envelope(
        message.body, message.sender, message.subject, message.correlation_id
    )


def decode_broadcast(obj: Any) -> Broadcast:
    """:raises MalformedMessage: unless *obj* is a mapping with a ``'body'`` key."""
    if not isinstance(obj, Mapping) or "body" not in obj:
        raise MalformedMessage(f"a broadcast is a mapping with a 'body', got {_describe(obj)}")
    return Broadcast(obj["body"], obj.get("sender"), obj.get("subject"), obj.get("correlation_id"))


# Replies


_HOST: list[Any] = [None, None]  # [pid, hostname]: looked up once per process


def get_host_info() -> dict[str, Any]:
    """:returns: ``{'hostname': ..., 'pid': ...}`` of this process (the host name is looked up
    once per process: it is added to every reply)."""
    pid = os.getpid()
    if _HOST[0] != pid:
        _HOST[:] = [pid, socket.gethostname()]
    return {HOSTNAME_KEY: _HOST[1], PID_KEY: pid}


def add_host_info(msg: dict[str, Any]) -> None:
    """Add this process's host info to the reply *msg*.

    :raises ValueError: if it already has one.
    """
    if HOST_KEY in msg:
        raise ValueError(f"Host information key already exists in message '{msg}'")
    msg[HOST_KEY] = get_host_info()


def _describe(obj: Any) -> str:
    text = repr(obj)
    return f"{type(obj).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
