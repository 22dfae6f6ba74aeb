"""The sans-IO wire protocol (``kiwipy.rmq.protocol``), table-driven and in both directions.

Each case gives a message, the object the protocol builds for it and the exact bytes kiwipy
0.9's YAML default puts on the wire; every case is checked encode-wise and decode-wise (h11's
``SIMPLE_CASES`` idea). No broker, no I/O.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

import kiwipy
from kiwipy import encoders
from kiwipy.rmq import protocol, utils

YAML = encoders.YAML

# (task, no_reply) -> wire bytes (api doc section 8)
TASK_CASES: list[tuple[Any, bool, bytes]] = [
    (21, False, b"!!python/tuple\n- 21\n- false\n"),
    ("The meaning?", True, b"!!python/tuple\n- The meaning?\n- true\n"),
    (None, False, b"!!python/tuple\n- null\n- false\n"),
    ({"pid": 5, "intent": "play"}, False, b"!!python/tuple\n- intent: play\n  pid: 5\n- false\n"),
]

BROADCAST_CASES: list[tuple[protocol.Broadcast, bytes]] = [
    (
        protocol.Broadcast(None, 12, "state_changed.a.b"),
        b"body: null\ncorrelation_id: null\nsender: 12\nsubject: state_changed.a.b\n",
    ),
    (
        protocol.Broadcast("car", "alice", "purchase.car", "c1"),
        b"body: car\ncorrelation_id: c1\nsender: alice\nsubject: purchase.car\n",
    ),
]

# reply dict -> (kind, value) and wire bytes (kiwipy 0.9 shapes, no extra keys)
REPLY_CASES: list[tuple[dict[str, Any], str, Any, bytes]] = [
    ({"result": 42}, "result", 42, b"result: 42\n"),
    ({"result": None}, "result", None, b"result: null\n"),
    ({"pending": None}, "pending", None, b"pending: null\n"),
    ({"cancelled": "stop"}, "cancelled", "stop", b"cancelled: stop\n"),
    ({"exception": "task boom"}, "exception", "task boom", b"exception: task boom\n"),
]


@pytest.mark.parametrize(("task", "no_reply", "wire"), TASK_CASES)
def test_task_both_directions(task: Any, no_reply: bool, wire: bytes) -> None:
    assert YAML.encode(protocol.encode_task(task, no_reply)) == wire
    decoded = protocol.decode_task(YAML.decode(wire))
    assert decoded == protocol.TaskBody(task, no_reply)
    assert (decoded.task, decoded.no_reply) == (task, no_reply)


@pytest.mark.parametrize(("message", "wire"), BROADCAST_CASES)
def test_broadcast_both_directions(message: protocol.Broadcast, wire: bytes) -> None:
    assert YAML.encode(protocol.encode_broadcast(message)) == wire
    assert protocol.decode_broadcast(YAML.decode(wire)) == message


@pytest.mark.parametrize(("reply", "kind", "value", "wire"), REPLY_CASES)
def test_reply_both_directions(reply: dict[str, Any], kind: str, value: Any, wire: bytes) -> None:
    assert YAML.encode(reply) == wire
    decoded = protocol.decode_reply(YAML.decode(wire))
    assert decoded.kind == kind
    if kind == "exception":
        assert isinstance(decoded.value, kiwipy.RemoteException)
        assert decoded.value.args == (value,)
    else:
        assert decoded.value == value


@pytest.mark.parametrize(
    ("builder", "args", "expected"),
    [
        (protocol.result_response, (42,), {"result": 42}),
        (protocol.pending_response, (), {"pending": None}),
        (protocol.cancelled_response, ("why",), {"cancelled": "why"}),
        (protocol.cancelled_response, (), {"cancelled": None}),
    ],
)
def test_reply_builders(builder: Any, args: tuple[Any, ...], expected: dict[str, Any]) -> None:
    assert builder(*args) == expected


def test_exception_reply_round_trip_keeps_type_and_traceback() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        reply = protocol.exception_response(exc)
    assert reply["exception"] == "'missing'"
    assert reply["exception_type"] == "builtins.KeyError"
    assert "KeyError: 'missing'" in reply["traceback"]
    decoded = protocol.decode_reply(YAML.decode(YAML.encode(reply)))
    assert decoded.value.args == ("'missing'",)
    assert decoded.value.remote_type == "builtins.KeyError"
    assert decoded.value.remote_traceback == reply["traceback"]


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ({"cancelled": None, "exception": "x", "result": 1}, "cancelled"),
        ({"exception": "x", "result": 1, "pending": None}, "exception"),
        ({"result": 1, "pending": None}, "result"),
    ],
)
def test_reply_keys_checked_in_kiwipy09_order(reply: dict[str, Any], kind: str) -> None:
    assert protocol.decode_reply(reply).kind == kind


@pytest.mark.parametrize(
    ("decode", "bad"),
    [
        (protocol.decode_task, {"not": "a pair"}),
        (protocol.decode_task, [1, 2, 3]),
        (protocol.decode_task, "text"),
        (protocol.decode_broadcast, ["no", "body"]),
        (protocol.decode_broadcast, {"sender": "no body"}),
        (protocol.decode_reply, "not a mapping"),
        (protocol.decode_reply, {"unknown": 1}),
    ],
)
def test_wrong_shapes_are_malformed(decode: Any, bad: Any) -> None:
    with pytest.raises(protocol.MalformedMessage) as info:
        decode(bad)
    assert isinstance(info.value, kiwipy.DecodeError)
    assert info.value.encoder == "kiwipy-protocol"


def test_task_from_json_list_is_accepted() -> None:
    assert protocol.decode_task(encoders.JSON.decode(b"[7, true]")) == protocol.TaskBody(7, True)


@pytest.mark.parametrize(
    ("recipient", "key"),
    [("tester", "[rpc].tester"), (42, "[rpc].42"), ("a.b", "[rpc].a.b")],
)
def test_rpc_routing_key(recipient: Any, key: str) -> None:
    assert protocol.rpc_routing_key(recipient) == key


@pytest.mark.parametrize("recipient", ["#", "*", "a.#", "\u00e9" * 125, ""])
def test_rpc_routing_key_refuses_bad_identifiers(recipient: Any) -> None:
    with pytest.raises(kiwipy.InvalidName, match="RPC identifier"):
        protocol.rpc_routing_key(recipient)


def test_rpc_queue_names_always_fit() -> None:
    assert protocol.rpc_queue_name("kiwipy.messages", "pid") == "kiwipy.messages.rpc.pid"
    exchange = "e" * 200
    longest = "\u00e9" * 124 + "x"  # 249 bytes, the longest identifier
    name = protocol.rpc_queue_name(exchange, longest)
    assert len(name.encode()) <= 255
    assert name.startswith("e" * 100) and ".rpc." in name
    assert name == protocol.rpc_queue_name(exchange, longest)  # deterministic
    assert name != protocol.rpc_queue_name(exchange, longest[:-1] + "y")
    assert name != protocol.rpc_queue_name("f" + exchange[1:], longest)
    unicode = protocol.rpc_queue_name("kiwipy.messages", "caf\u00e9")  # pamqp refuses "é"
    assert unicode.startswith("kiwipy.messages.rpc.") and unicode.isascii()


def test_host_info() -> None:
    assert protocol.get_host_info() == {"hostname": socket.gethostname(), "pid": os.getpid()}
    reply = protocol.result_response(1)
    protocol.add_host_info(reply)
    assert reply == {"result": 1, "host": protocol.get_host_info()}
    with pytest.raises(ValueError):
        protocol.add_host_info(reply)


@pytest.mark.parametrize(("reply", "kind", "value", "wire"), REPLY_CASES)
def test_utils_response_to_future(
    reply: dict[str, Any], kind: str, value: Any, wire: bytes
) -> None:
    """kiwipy 0.9's ``rmq.utils`` helpers, built on the protocol."""
    future = utils.response_to_future(YAML.decode(wire))
    if kind == "cancelled":
        assert future.cancelled()
    elif kind == "exception":
        assert future.exception().args == (value,)
    elif kind == "pending":
        assert not future.result().done()
    else:
        assert future.result() == value
        assert utils.response_result(reply) == value
        assert utils.future_to_response(future) == reply


def test_utils_errors_and_ensure_coroutine() -> None:
    with pytest.raises(TypeError):
        utils.response_to_future(["not", "a", "mapping"])
    with pytest.raises(ValueError):
        utils.response_to_future({"what": 1})
    with pytest.raises(TypeError):
        utils.ensure_coroutine(42)

    class AsyncCall:
        async def __call__(self, value: int) -> int:
            return value + 1

    import asyncio

    wrapped = utils.ensure_coroutine(AsyncCall())  # B11: awaited, not left unawaited
    assert asyncio.run(wrapped(1)) == 2
    assert asyncio.run(utils.ensure_coroutine(lambda v: v * 2)(4)) == 8


def test_lost_reply_is_reply_lost_here_and_an_exception_for_kiwipy09() -> None:
    reply = protocol.lost_response("gone")
    decoded = protocol.decode_reply(YAML.decode(YAML.encode(reply)))
    assert decoded.kind == "exception"
    assert isinstance(decoded.value, kiwipy.ReplyLost) and decoded.value.args == ("gone",)
    # what kiwipy 0.9 reads: its keys, in its order (cancelled, exception, ...)
    assert "cancelled" not in reply and reply["exception"] == "gone"
