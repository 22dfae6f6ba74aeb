"""The hand-written AMQP frames (issue 6) are byte-identical to what aiormq/pamqp write."""

from __future__ import annotations

import datetime
from typing import Any

import pamqp.frame
import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from kiwipy.rmq.connection import _amqp
from kiwipy.rmq.receive import _acks
from kiwipy.rmq.send import _frames

MAX_CONTENT = 131072 - 8

PROPERTIES: list[dict[str, Any]] = [
    {},
    {"delivery_mode": 2, "priority": 0},
    {"delivery_mode": 1, "priority": 0, "correlation_id": "c" * 36},
    {"delivery_mode": 2, "correlation_id": "x", "reply_to": "r", "message_id": "m" * 32},
    {"content_type": "application/msgpack", "content_encoding": "gzip"},
    {"content_type": "", "reply_to": ""},  # empty strings are left out, as pamqp does
    {"expiration": "1000", "message_type": "t", "user_id": "guest", "app_id": "kiwipy"},
    {"priority": 9},
    {"correlation_id": "caf\u00e9 \u2603"},
    {"headers": {"x-kiwipy-lease": "abc", "n": 1}, "delivery_mode": 2},
    {"headers": {}},
    {"timestamp": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)},
]


def _pamqp_frames(channel: int, exchange: str, key: str, mandatory: bool, props: Any, body: bytes):
    frames: list[Any] = [
        spec.Basic.Publish(exchange=exchange, routing_key=key, mandatory=mandatory),
        ContentHeader(body_size=len(body), properties=props),
    ]
    if body:
        if len(body) < MAX_CONTENT:
            frames.append(ContentBody(body))
        else:
            frames += [
                ContentBody(body[i : i + MAX_CONTENT]) for i in range(0, len(body), MAX_CONTENT)
            ]
    return ChannelFrame.marshall(channel_number=channel, frames=frames).payload


@pytest.mark.parametrize("fields", PROPERTIES)
@pytest.mark.parametrize("size", [0, 1, 1024, MAX_CONTENT - 1, MAX_CONTENT, 3 * MAX_CONTENT + 5])
def test_publish_frames_are_byte_identical(fields: dict[str, Any], size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    props = spec.Basic.Properties(**fields)
    expected = _pamqp_frames(3, "kiwipy.tasks", "queue", True, props, body)
    got = b"".join(
        _frames.publish_frames(3, "kiwipy.tasks", "queue", True, props, body, MAX_CONTENT)
    )
    assert got == expected


def test_kiwipy_task_properties_are_byte_identical() -> None:
    props = _amqp.properties(
        persistent=True, correlation_id=_amqp.new_correlation_id(), reply_to="q-reply-1"
    )
    props.message_id = "0" * 32
    assert _frames.properties_payload(props) == props.marshal()


def test_unusual_values_are_left_to_pamqp() -> None:
    props = spec.Basic.Properties(correlation_id="x" * 300)
    with pytest.raises(Exception):  # noqa: B017 - whatever pamqp raises
        props.marshal()
    with pytest.raises(Exception):  # noqa: B017
        _frames.properties_payload(props)


@pytest.mark.parametrize("channel", [1, 2, 65535])
@pytest.mark.parametrize("tag", [1, 255, 2**40 + 7])
def test_ack_frames_are_byte_identical(channel: int, tag: int) -> None:
    assert _acks.ack_frame(channel, tag) == pamqp.frame.marshal(
        spec.Basic.Ack(delivery_tag=tag), channel
    )
