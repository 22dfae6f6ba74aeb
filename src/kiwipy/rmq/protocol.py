"""The kiwipy wire protocol, free of I/O: message shapes, routing keys and reply bodies.

Nothing here imports asyncio or aio-pika (rule: protocol stays pure; see ``tests/unit``).
What goes on the wire is byte-compatible with kiwipy 0.9 (api doc sections 7 and 8):

* a task body is the pair ``(task, no_reply)``;
* a broadcast body is ``{'body', 'sender', 'subject', 'correlation_id'}``;
* a reply body is one of ``{'result': v}``, ``{'exception': text}``, ``{'pending': None}``,
  ``{'cancelled': text}``; task replies also carry ``'host': {'hostname', 'pid'}``.

Replies from this library add two keys kiwipy 0.9 ignores: ``'exception_type'`` and
``'traceback'`` next to ``'exception'``, so a :class:`~kiwipy.RemoteException` can say what
was raised and where.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import traceback
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

from .. import _broadcasts, exceptions
from .._error_text import exception_text

__all__ = (
    "BROADCAST_TOPIC",
    "CANCELLED_KEY",
    "EXCEPTION_KEY",
    "EXCEPTION_TYPE_KEY",
    "HOSTNAME_KEY",
    "HOST_KEY",
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
    "pending_response",
    "result_response",
    "rpc_queue_name",
    "rpc_routing_key",
)

BROADCAST_TOPIC = "[broadcast]"
RPC_TOPIC = "[rpc]"

HOST_KEY = "host"
HOSTNAME_KEY = "hostname"
PID_KEY = "pid"
RESULT_KEY = "result"
EXCEPTION_KEY = "exception"
CANCELLED_KEY = "cancelled"
PENDING_KEY = "pending"
EXCEPTION_TYPE_KEY = "exception_type"
TRACEBACK_KEY = "traceback"


class MalformedMessage(exceptions.DecodeError):
    """A message decoded fine but does not have the shape its kind requires."""

    def __init__(self, message: str) -> None:
        super().__init__(message, encoder="kiwipy-protocol")


def rpc_routing_key(recipient_id: Any) -> str:
    """:returns: the routing key of RPCs to *recipient_id* (``[rpc].<id>``)."""
    return f"{RPC_TOPIC}.{recipient_id}"


def rpc_queue_name(exchange: str, identifier: Any) -> str:
    """:returns: the exclusive queue that holds the RPC *identifier* on *exchange*."""
    return f"{exchange}.rpc.{identifier}"


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


def result_response(result: Any) -> dict[str, Any]:
    return {RESULT_KEY: result}


def exception_response(exception: BaseException, trace: Any = None) -> dict[str, Any]:
    """:returns: the reply for *exception*: its text (kiwipy 0.9's key) plus its type and
    traceback (keys kiwipy 0.9 ignores)."""
    message = exception_text(exception)
    if trace is not None:
        message += "\n" + "".join(traceback.format_tb(trace))
    exc_type = type(exception)
    return {
        EXCEPTION_KEY: message,
        EXCEPTION_TYPE_KEY: f"{exc_type.__module__}.{exc_type.__qualname__}",
        TRACEBACK_KEY: "".join(
            traceback.format_exception(exc_type, exception, exception.__traceback__)
        ),
    }


def cancelled_response(msg: Optional[str] = None) -> dict[str, Any]:
    return {CANCELLED_KEY: msg}


def pending_response(msg: Optional[str] = None) -> dict[str, Any]:
    return {PENDING_KEY: msg}


@dataclasses.dataclass(frozen=True)
class Reply:
    """A decoded reply. ``kind`` is ``'cancelled'``, ``'exception'``, ``'result'`` or
    ``'pending'``; ``value`` is the result, or the :class:`~kiwipy.RemoteException`."""

    kind: str
    value: Any = None


def decode_reply(response: Any) -> Reply:
    """Classify a decoded reply body, checking keys in kiwipy 0.9's order (cancelled,
    exception, result, pending).

    :raises MalformedMessage: if it is not a mapping or has none of the keys.
    """
    if not isinstance(response, Mapping):
        raise MalformedMessage(f"a reply is a mapping, got {_describe(response)}")
    if CANCELLED_KEY in response:
        return Reply("cancelled", response[CANCELLED_KEY])
    if EXCEPTION_KEY in response:
        remote = exceptions.RemoteException(
            response[EXCEPTION_KEY],
            remote_type=response.get(EXCEPTION_TYPE_KEY),
            remote_traceback=response.get(TRACEBACK_KEY),
        )
        return Reply("exception", remote)
    if RESULT_KEY in response:
        return Reply("result", response[RESULT_KEY])
    if PENDING_KEY in response:
        return Reply("pending", response[PENDING_KEY])
    raise MalformedMessage(f"a reply has one of result/exception/pending/cancelled: {response!r}")


def _describe(obj: Any) -> str:
    text = repr(obj)
    return f"{type(obj).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
