"""The W3C trace context is on the wire (issue 17): read back by a plain aio-pika consumer
on a queue of its own bound to kiwipy's exchanges, as any other AMQP client would see it."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest
from opentelemetry import trace

from tests.contract_tracing import otel_sdk

WAIT = 5.0


async def _tap(channel: aio_pika.abc.AbstractChannel, exchange: str, key: str) -> Any:
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(exchange, routing_key=key)
    return queue


async def _next(queue: Any) -> aio_pika.abc.AbstractIncomingMessage:
    async with queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            return message
    raise AssertionError("the queue iterator ended")


def _producer_of(kind: str, trace_id: int) -> Any:
    spans = [
        span
        for span in otel_sdk().spans.get_finished_spans()
        if span.context.trace_id == trace_id
        and span.kind == trace.SpanKind.PRODUCER
        and (span.attributes or {}).get("kiwipy.message.kind") == kind
    ]
    assert len(spans) == 1
    return spans[0]


def _traceparent(span: Any) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


@pytest.fixture
async def raw(rmq_uri: str) -> Any:
    connection = await aio_pika.connect(rmq_uri)
    yield await connection.channel()
    await connection.close()


async def test_traceparent_header_of_task_rpc_and_broadcast(communicator, raw, names) -> None:
    otel_sdk()
    tracer = trace.get_tracer("test")
    await communicator.get_message_publisher()  # declares the message exchange
    await communicator.task_send("declare", no_reply=True)  # declares the task exchange
    taps = {
        "task": await _tap(raw, names.task_exchange, names.task_queue),
        "rpc": await _tap(raw, names.message_exchange, "[rpc].wired"),
        "broadcast": await _tap(raw, names.message_exchange, "[broadcast]"),
    }
    await communicator.add_rpc_subscriber(lambda _c, msg: msg, "wired")
    with tracer.start_as_current_span("root") as root:
        await communicator.task_send("traced", no_reply=True)
        await asyncio.wait_for(await communicator.rpc_send("wired", 1), WAIT)
        await communicator.broadcast_send("traced")
    trace_id = root.get_span_context().trace_id
    for kind, queue in taps.items():
        message = await asyncio.wait_for(_next(queue), WAIT)
        headers = message.headers or {}
        assert headers.get("traceparent") == _traceparent(_producer_of(kind, trace_id)), kind


async def test_dead_lettering_is_a_span_event_and_counted(communicator, raw, names) -> None:
    otel = otel_sdk()
    await communicator.add_task_subscriber(lambda _c, task: task)
    exchange = await raw.get_exchange(names.task_exchange)
    # not a (task, no_reply) pair: kiwipy parks it in <queue>.dead (no traceparent: a root)
    await exchange.publish(aio_pika.Message(b"just text"), routing_key=names.task_queue)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        spans = [
            span
            for span in otel.spans.get_finished_spans()
            if span.kind == trace.SpanKind.CONSUMER
            and (span.attributes or {}).get("messaging.destination.name") == names.task_queue
        ]
        if spans or loop.time() > deadline:
            break
        await asyncio.sleep(0.01)
    assert len(spans) == 1 and spans[0].parent is None
    events = [(event.name, dict(event.attributes or {})) for event in spans[0].events]
    assert events == [("kiwipy.dead_lettered", {"kiwipy.reason": "malformed"})]
    counted = [
        point.value
        for point in otel.metric_points("kiwipy.dead_lettered")
        if point.attributes["messaging.destination.name"] == names.task_queue
    ]
    assert counted == [1]
    await raw.queue_delete(f"{names.task_queue}.dead")
