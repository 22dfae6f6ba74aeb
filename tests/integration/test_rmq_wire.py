"""What goes on the wire, checked byte for byte against kiwipy 0.9's format (api doc 7-8)."""

from __future__ import annotations

import asyncio
import uuid

import aiormq
import pytest
import yaml
from pamqp import commands as spec

import kiwipy

WAIT = 5.0


async def _get(channel, queue: str, timeout: float = WAIT):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await channel.basic_get(queue, no_ack=True)
        if isinstance(message.delivery, spec.Basic.GetOk):
            return message
        assert loop.time() < deadline, f"nothing arrived in {queue}"
        await asyncio.sleep(0.02)


async def _tap(channel, exchange: str, routing_key: str) -> str:
    """A queue of ours bound to *exchange* with *routing_key*, as a 0.9 peer would bind it."""
    queue = (await channel.queue_declare("", exclusive=True)).queue
    await channel.queue_bind(queue, exchange, routing_key=routing_key)
    return queue


def _is_uuid4(text: str) -> bool:
    return str(uuid.UUID(text, version=4)) == text


async def test_rpc_request_on_the_wire(communicator, raw_channel, names) -> None:
    await communicator.get_message_publisher()  # declares the exchange
    tap = await _tap(raw_channel, names.message_exchange, "[rpc].wire")
    await communicator.rpc_send("wire", {"intent": "play", "pid": 7})
    message = await _get(raw_channel, tap)
    props = message.header.properties
    assert message.body == b"intent: play\npid: 7\n"
    assert message.exchange == names.message_exchange
    assert message.routing_key == "[rpc].wire"
    assert _is_uuid4(props.correlation_id)
    assert props.reply_to.startswith(f"{names.message_exchange}-reply-")
    assert _is_uuid4(props.reply_to.rsplit("-reply-", 1)[1])
    assert props.delivery_mode == 1
    assert props.content_type is None and props.expiration is None


async def test_broadcast_on_the_wire(communicator, raw_channel, names) -> None:
    await communicator.get_message_publisher()
    tap = await _tap(raw_channel, names.message_exchange, "[broadcast]")
    await communicator.broadcast_send(None, sender=12, subject="state_changed.a.b")
    message = await _get(raw_channel, tap)
    expected = yaml.dump(
        {"body": None, "sender": 12, "subject": "state_changed.a.b", "correlation_id": None},
        encoding="utf-8",
    )
    assert message.body == expected
    assert message.routing_key == "[broadcast]"
    props = message.header.properties
    assert props.delivery_mode == 1
    assert props.correlation_id is None and props.reply_to is None


async def test_task_on_the_wire(communicator, raw_channel, names) -> None:
    await communicator.task_send(21)
    await communicator.task_send(22, no_reply=True)
    first = await _get(raw_channel, names.task_queue)
    second = await _get(raw_channel, names.task_queue)
    assert first.body == b"!!python/tuple\n- 21\n- false\n"
    assert second.body == b"!!python/tuple\n- 22\n- true\n"
    assert first.exchange == names.task_exchange and first.routing_key == names.task_queue
    for message in (first, second):
        props = message.header.properties
        assert props.delivery_mode == 2
        assert _is_uuid4(props.correlation_id)
        # kiwipy 0.9 sets reply_to even with no_reply=True
        assert props.reply_to.startswith(f"{names.message_exchange}-reply-")


async def test_task_reply_on_the_wire(communicator, raw_channel, names) -> None:
    await communicator.add_task_subscriber(lambda _c, task: task * 2)
    tap = await _tap(raw_channel, names.task_exchange, "my-reply-queue")
    await raw_channel.basic_publish(
        yaml.dump((21, False), encoding="utf-8"),
        exchange=names.task_exchange,
        routing_key=names.task_queue,
        properties=spec.Basic.Properties(
            correlation_id="cid-1", reply_to="my-reply-queue", delivery_mode=2
        ),
    )
    reply = await _get(raw_channel, tap)
    body = yaml.load(reply.body, Loader=yaml.FullLoader)
    assert reply.exchange == names.task_exchange
    assert reply.header.properties.correlation_id == "cid-1"
    assert body["result"] == 42
    assert set(body["host"]) == {"hostname", "pid"}
    assert set(body) == {"result", "host"}


async def test_rpc_pending_and_exception_replies_on_the_wire(communicator, raw_channel, names):
    later = asyncio.get_running_loop().create_future()

    def subscriber(_c, msg):
        if msg == "fail":
            raise KeyError("missing")
        return later

    await communicator.add_rpc_subscriber(subscriber, "wire-rpc")
    tap = await _tap(raw_channel, names.message_exchange, "raw-replies")
    for correlation_id, msg in (("c-pending", "later"), ("c-fail", "fail")):
        await raw_channel.basic_publish(
            yaml.dump(msg, encoding="utf-8"),
            exchange=names.message_exchange,
            routing_key="[rpc].wire-rpc",
            properties=spec.Basic.Properties(correlation_id=correlation_id, reply_to="raw-replies"),
        )
    replies = {}
    for _ in range(2):
        message = await _get(raw_channel, tap)
        replies[message.header.properties.correlation_id] = message.body
    later.set_result("value")
    final = await _get(raw_channel, tap)
    assert replies["c-pending"] == b"pending: null\n"
    failed = yaml.load(replies["c-fail"], Loader=yaml.FullLoader)
    assert failed["exception"] == "'missing'"
    assert failed["exception_type"] == "builtins.KeyError"
    assert final.body == b"result: value\n"
    assert "host" not in failed


async def test_rpc_queue_is_exclusive_and_named_after_the_identifier(
    communicator, raw_channel, names
) -> None:
    await communicator.add_rpc_subscriber(lambda _c, m: m, "named")
    queue = f"{names.message_exchange}.rpc.named"
    with pytest.raises(aiormq.exceptions.ChannelLockedResource):
        await raw_channel.queue_declare(queue, passive=True)


async def test_reply_queue_is_durable_with_expiry(communicator, rmq_uri) -> None:
    publisher = await communicator.get_message_publisher()
    name = publisher._replies.name
    connection = await aiormq.connect(rmq_uri)
    try:
        channel = await connection.channel()
        ok = await channel.queue_declare(name, durable=True, arguments={"x-expires": 60000})
        assert ok.consumer_count == 1
    finally:
        await connection.close()


async def test_a_kiwipy09_style_reply_resolves_our_future(communicator, raw_channel, names):
    """Replies built exactly as kiwipy 0.9 builds them (no extra keys) are understood."""
    await communicator.get_message_publisher()
    tap = await _tap(raw_channel, names.message_exchange, "[rpc].peer")
    future = await communicator.rpc_send("peer", "question")
    request = await _get(raw_channel, tap)
    props = request.header.properties
    await raw_channel.basic_publish(
        b"exception: bad thing\n",
        exchange=names.message_exchange,
        routing_key=props.reply_to,
        properties=spec.Basic.Properties(correlation_id=props.correlation_id),
    )
    with pytest.raises(kiwipy.RemoteException) as info:
        await asyncio.wait_for(future, WAIT)
    assert info.value.args == ("bad thing",)
    assert info.value.remote_type is None
