"""AMQP frames of a ``basic.publish``, marshalled fast and byte-identical to pamqp's.

aiormq marshals every publish through pamqp's generic, attribute-by-attribute encoder, which
costs more than the rest of a publish together. This module writes the same three kinds of
frame (method, content header, content body) with a few ``struct`` calls:

* the method frame is marshalled by pamqp once per (channel, exchange, routing key,
  mandatory) and reused;
* the content header encodes the properties kiwipy sets (short strings and octets) by hand
  and leaves any other property set (``headers``, ``timestamp``) to pamqp;
* the body is split into frames of at most ``max_content_size`` bytes exactly as aiormq
  splits it (no frame for an empty body).

``tests/unit/test_perf_frames.py`` checks the bytes against pamqp's for every property.
"""

from __future__ import annotations

import functools
import struct
from typing import Any, Optional

import pamqp.frame
from pamqp import commands as spec

__all__ = ("SHORT_STRING_PROPERTIES", "properties_payload", "publish_frames")

_FRAME_HEADER = struct.Struct(">BHI")
_HEADER_START = struct.Struct(">HxxQ")
_FLAGS = struct.Struct(">H")
_END = b"\xce"
_CONTENT_HEADER = 2
_CONTENT_BODY = 3

#: (attribute, flag, is a short string) in pamqp's order; the others need pamqp.
_FIELDS: tuple[tuple[str, int, bool], ...] = (
    ("content_type", 0x8000, True),
    ("content_encoding", 0x4000, True),
    ("delivery_mode", 0x1000, False),
    ("priority", 0x0800, False),
    ("correlation_id", 0x0400, True),
    ("reply_to", 0x0200, True),
    ("expiration", 0x0100, True),
    ("message_id", 0x0080, True),
    ("message_type", 0x0020, True),
    ("user_id", 0x0010, True),
    ("app_id", 0x0008, True),
    ("cluster_id", 0x0004, True),
)

#: The properties that are AMQP short strings.
SHORT_STRING_PROPERTIES = tuple(name for name, _flag, is_string in _FIELDS if is_string)


def properties_payload(props: spec.Basic.Properties) -> bytes:
    """:returns: ``props.marshal()`` (pamqp's property list with its flags)."""
    if props.headers is not None or props.timestamp is not None:
        return bytes(props.marshal())
    flags = 0
    parts: list[bytes] = []
    for name, flag, is_string in _FIELDS:
        value = getattr(props, name)
        if value is None or value == "":
            continue
        if is_string:
            data = value.encode("utf-8") if type(value) is str else None
            if data is None or len(data) > 255:
                return bytes(props.marshal())  # pamqp raises what it raises
            parts.append(bytes((len(data),)) + data)
        elif type(value) is int and 0 <= value <= 255:
            parts.append(bytes((value,)))
        else:
            return bytes(props.marshal())
        flags |= flag
    return _FLAGS.pack(flags) + b"".join(parts)


@functools.lru_cache(maxsize=256)
def _method_frame(channel: int, exchange: str, routing_key: str, mandatory: bool) -> bytes:
    frame = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
    return bytes(pamqp.frame.marshal(frame, channel))


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_HEADER.pack(kind, channel, len(payload)) + payload + _END


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    props: spec.Basic.Properties,
    body: bytes,
    max_content_size: int,
    out: Optional[list[bytes]] = None,
) -> list[bytes]:
    """:returns: *out* (a new list if ``None``) with the frames of one ``basic.publish``
    appended, as aiormq's ``basic_publish`` would write them."""
    frames: list[Any] = [] if out is None else out
    frames.append(_method_frame(channel, exchange, routing_key, mandatory))
    header = _HEADER_START.pack(60, len(body)) + properties_payload(props)
    frames.append(_frame(_CONTENT_HEADER, channel, header))
    if len(body) < max_content_size:
        if body:
            frames.append(_frame(_CONTENT_BODY, channel, body))
    else:
        view = memoryview(body)
        for start in range(0, len(body), max_content_size):
            frames.append(
                _frame(_CONTENT_BODY, channel, bytes(view[start : start + max_content_size]))
            )
    return frames
