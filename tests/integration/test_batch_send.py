"""``task_send_many``, ``rpc_send_many``, ``broadcast_send_many`` and the thread facade's
quick sends against RabbitMQ (issue 6): every message confirmed, results arrive, the wire is
what ``task_send`` (``rpc_send``, ``broadcast_send``) writes, failures are reported per
message, and encoding happens off the event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiormq
import pytest

import kiwipy
from kiwipy import encoders, rmq
from kiwipy.rmq.send import _batch

WAIT = 10.0


async def test_every_task_is_confirmed_and_answered(communicator: rmq.RmqCommunicator) -> None:
    await communicator.add_task_subscriber(lambda _c, task: task * 2)
    count = 3 * _batch.WINDOW + 7  # several windows, the last one partial
    futures = await communicator.task_send_many(range(count))
    assert len(futures) == count
    results = await asyncio.wait_for(asyncio.gather(*futures), WAIT)  # type: ignore[arg-type]
    assert results == [2 * i for i in range(count)]
    assert communicator.pending_replies == 0


async def test_no_reply_batches_return_none(communicator: rmq.RmqCommunicator) -> None:
    done = asyncio.Event()
    seen: list[Any] = []

    def take(_c: Any, task: Any) -> None:
        seen.append(task)
        if len(seen) == 20:
            done.set()

    await communicator.add_task_subscriber(take)
    assert await communicator.task_send_many(range(20), no_reply=True) == [None] * 20
    await asyncio.wait_for(done.wait(), WAIT)
    assert sorted(seen) == list(range(20))
    assert communicator.pending_replies == 0


async def _take(channel: aiormq.abc.AbstractChannel, queue: str) -> aiormq.abc.DeliveredMessage:
    for _ in range(100):
        message = await channel.basic_get(queue, no_ack=True)
        if message.body or message.header.properties.correlation_id:
            return message
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing in {queue}")


def _untraced(headers: Any) -> Any:
    """*headers* without W3C trace context: with an OpenTelemetry SDK configured (an earlier
    test may have set the global one), each message carries its own ``traceparent``."""
    return {k: v for k, v in (headers or {}).items() if k not in ("traceparent", "tracestate")}


async def test_the_wire_is_what_task_send_writes(
    communicator: rmq.RmqCommunicator, raw_channel: aiormq.abc.AbstractChannel, names: Any
) -> None:
    await communicator.get_default_task_queue()
    single = await communicator.task_send({"n": 1})
    batch = await communicator.task_send_many([{"n": 1}])
    one, two = (
        await _take(raw_channel, names.task_queue),
        await _take(raw_channel, names.task_queue),
    )
    assert one.body == two.body == encoders.YAML.encode(({"n": 1}, False))
    first, second = one.header.properties, two.header.properties
    for field in ("delivery_mode", "priority", "content_type", "reply_to", "expiration"):
        assert getattr(first, field) == getattr(second, field), field
    assert _untraced(first.headers) == _untraced(second.headers)
    assert first.delivery_mode == 2
    assert len(first.message_id) == len(second.message_id) == 32
    assert first.correlation_id != second.correlation_id
    for future in (single, *batch):
        assert future is not None
        future.cancel()


async def test_unconfirmed_tasks_are_reported(
    communicator: rmq.RmqCommunicator, raw_channel: aiormq.abc.AbstractChannel, names: Any
) -> None:
    await communicator.get_default_task_queue()
    await raw_channel.queue_delete(names.task_queue)  # nothing is bound: every task returns
    with pytest.raises(kiwipy.BatchSendError) as caught:
        await communicator.task_send_many(range(2 * _batch.WINDOW))
    error = caught.value
    assert sorted(error.errors) == list(range(2 * _batch.WINDOW))
    assert isinstance(error.errors[0], kiwipy.UnroutableError)
    assert isinstance(error.__cause__, kiwipy.UnroutableError)
    assert error.futures == [None] * (2 * _batch.WINDOW)
    assert communicator.pending_replies == 0


async def test_nothing_is_sent_when_a_task_cannot_be_encoded(
    communicator: rmq.RmqCommunicator, raw_channel: aiormq.abc.AbstractChannel, names: Any
) -> None:
    await communicator.get_default_task_queue()
    with pytest.raises(kiwipy.EncodeError):
        await communicator.task_send_many([1, threading.Lock(), 3])
    ok = await raw_channel.queue_declare(names.task_queue, passive=True)
    assert ok.message_count == 0


def test_the_thread_communicator_sends_batches(
    thread_communicator: rmq.RmqThreadCommunicator,
) -> None:
    thread_communicator.add_task_subscriber(lambda _c, task: task + 1)
    futures = thread_communicator.task_send_many(range(600))
    assert [future.result(WAIT) for future in futures] == list(range(1, 601))  # type: ignore[union-attr]


async def test_every_rpc_call_is_confirmed_and_answered(
    communicator: rmq.RmqCommunicator,
) -> None:
    await communicator.add_rpc_subscriber(lambda _c, msg: msg + 1, "adder")
    count = 3 * _batch.WINDOW + 7  # several windows, the last one partial
    futures = await communicator.rpc_send_many([("adder", n) for n in range(count)])
    assert len(futures) == count
    results = await asyncio.wait_for(asyncio.gather(*futures), WAIT)
    assert results == [n + 1 for n in range(count)]
    assert communicator.pending_replies == 0


async def test_the_wire_is_what_rpc_send_writes(
    communicator: rmq.RmqCommunicator, raw_channel: aiormq.abc.AbstractChannel, names: Any
) -> None:
    await communicator.get_message_publisher()  # declares the exchange
    tap = (await raw_channel.queue_declare("", exclusive=True)).queue
    await raw_channel.queue_bind(tap, names.message_exchange, routing_key="[rpc].wire")
    single = await communicator.rpc_send("wire", {"pid": 7})
    batch = await communicator.rpc_send_many([("wire", {"pid": 7})])
    one, two = await _take(raw_channel, tap), await _take(raw_channel, tap)
    assert one.body == two.body == encoders.YAML.encode({"pid": 7})
    assert one.exchange == two.exchange == names.message_exchange
    assert one.routing_key == two.routing_key == "[rpc].wire"
    first, second = one.header.properties, two.header.properties
    for field in ("delivery_mode", "priority", "content_type", "reply_to", "expiration"):
        assert getattr(first, field) == getattr(second, field), field
    assert _untraced(first.headers) == _untraced(second.headers)
    assert first.delivery_mode == 1  # transient
    assert len(first.message_id) == len(second.message_id) == 32
    assert first.correlation_id != second.correlation_id
    for future in (single, *batch):
        future.cancel()


async def test_replies_are_awaited_as_rpc_send_awaits_them(
    communicator: rmq.RmqCommunicator, names: Any
) -> None:
    release = asyncio.Event()

    async def slow(_c: Any, msg: Any) -> Any:
        await release.wait()
        return msg

    await communicator.add_rpc_subscriber(slow, "slow")
    single = await communicator.rpc_send("slow", "done")
    (batch,) = await communicator.rpc_send_many([("slow", "done")])
    # what each reply is registered with
    waiting = [each for _, (_, each) in communicator._replies._waiting.items()]
    one, two = ((each.recipient, each.watch) for each in waiting)
    assert one == two == ("[rpc].slow", rmq.messages.rpc_queue_name(names.message_exchange, "slow"))
    release.set()
    assert await asyncio.wait_for(asyncio.gather(single, batch), WAIT) == ["done", "done"]


async def test_unroutable_calls_do_not_stop_the_batch(communicator: rmq.RmqCommunicator) -> None:
    await communicator.add_rpc_subscriber(lambda _c, msg: msg, "here")
    calls = [("here" if n % 2 else "gone", n) for n in range(2 * _batch.WINDOW)]
    with pytest.raises(kiwipy.BatchSendError) as caught:
        await communicator.rpc_send_many(calls)
    error = caught.value
    assert sorted(error.errors) == list(range(0, 2 * _batch.WINDOW, 2))
    assert all(isinstance(each, kiwipy.UnroutableError) for each in error.errors.values())
    assert isinstance(error.__cause__, kiwipy.UnroutableError)
    answered = [future for future in error.futures if future is not None]
    assert await asyncio.wait_for(asyncio.gather(*answered), WAIT) == [
        n for n in range(2 * _batch.WINDOW) if n % 2
    ]
    assert communicator.pending_replies == 0


async def test_no_rpc_is_sent_when_one_cannot_be_encoded(
    communicator: rmq.RmqCommunicator, raw_channel: aiormq.abc.AbstractChannel, names: Any
) -> None:
    await communicator.get_message_publisher()
    tap = (await raw_channel.queue_declare("", exclusive=True)).queue
    await raw_channel.queue_bind(tap, names.message_exchange, routing_key="[rpc].enc")
    with pytest.raises(kiwipy.EncodeError):
        await communicator.rpc_send_many([("enc", 1), ("enc", threading.Lock())])
    ok = await raw_channel.queue_declare(tap, passive=True)
    assert ok.message_count == 0
    assert communicator.pending_replies == 0


def test_the_thread_communicator_sends_rpc_batches(
    thread_communicator: rmq.RmqThreadCommunicator,
) -> None:
    thread_communicator.add_rpc_subscriber(lambda _c, msg: -msg, "negate")
    futures = thread_communicator.rpc_send_many(("negate", n) for n in range(600))
    assert [future.result(WAIT) for future in futures] == [-n for n in range(600)]


class _Listener:
    """A broadcast subscriber recording what it hears; :attr:`done` once *count* arrived."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.heard: list[tuple[Any, ...]] = []
        self.done = threading.Event()

    def __call__(self, _comm: Any, *args: Any) -> None:
        self.heard.append(args)
        if len(self.heard) >= self.count:
            self.done.set()


async def test_every_broadcast_is_confirmed_and_heard(communicator: rmq.RmqCommunicator) -> None:
    count = 3 * _batch.WINDOW + 7  # several windows, the last one partial
    listener = _Listener(count)
    await communicator.add_broadcast_subscriber(listener)
    broadcasts = [(n, "batch", f"count.{n % 3}", f"id{n}") for n in range(count)]
    assert await communicator.broadcast_send_many(broadcasts) is None
    assert await asyncio.to_thread(listener.done.wait, WAIT)
    assert listener.heard == broadcasts
    assert communicator.pending_replies == 0


async def test_the_wire_is_what_broadcast_send_writes(
    communicator: rmq.RmqCommunicator, raw_channel: aiormq.abc.AbstractChannel, names: Any
) -> None:
    await communicator.get_message_publisher()  # declares the exchange
    tap = (await raw_channel.queue_declare("", exclusive=True)).queue
    await raw_channel.queue_bind(tap, names.message_exchange, routing_key="[broadcast]")
    args = ({"n": 7}, "me", "news.wire", "c7")
    assert await communicator.broadcast_send(*args)
    await communicator.broadcast_send_many([args])
    one, two = await _take(raw_channel, tap), await _take(raw_channel, tap)
    envelope = {"body": {"n": 7}, "sender": "me", "subject": "news.wire", "correlation_id": "c7"}
    assert one.body == two.body == encoders.YAML.encode(envelope)
    assert one.exchange == two.exchange == names.message_exchange
    assert one.routing_key == two.routing_key == "[broadcast]"
    first, second = one.header.properties, two.header.properties
    fields = ("delivery_mode", "priority", "content_type", "reply_to", "expiration")
    for field in (*fields, "correlation_id"):
        assert getattr(first, field) == getattr(second, field), field
    assert _untraced(first.headers) == _untraced(second.headers)
    assert first.delivery_mode == 1  # transient
    assert first.correlation_id is None and first.reply_to is None  # no reply is awaited
    assert len(first.message_id) == len(second.message_id) == 32


async def test_no_broadcast_is_sent_when_one_is_malformed_or_cannot_be_encoded(
    communicator: rmq.RmqCommunicator, raw_channel: aiormq.abc.AbstractChannel, names: Any
) -> None:
    await communicator.get_message_publisher()
    tap = (await raw_channel.queue_declare("", exclusive=True)).queue
    await raw_channel.queue_bind(tap, names.message_exchange, routing_key="[broadcast]")
    with pytest.raises(kiwipy.EncodeError):
        await communicator.broadcast_send_many([(1,), (threading.Lock(),)])
    with pytest.raises(TypeError):
        await communicator.broadcast_send_many([(1,), 2])
    ok = await raw_channel.queue_declare(tap, passive=True)
    assert ok.message_count == 0


async def test_unconfirmed_broadcasts_are_reported(
    communicator: rmq.RmqCommunicator, raw_channel: aiormq.abc.AbstractChannel, names: Any
) -> None:
    await communicator.get_message_publisher()
    await raw_channel.exchange_delete(names.message_exchange)  # every publish: 404, no confirm
    count = 2 * _batch.WINDOW
    with pytest.raises(kiwipy.BatchSendError) as caught:
        await communicator.broadcast_send_many([(n,) for n in range(count)])
    error = caught.value
    assert error.futures == [None] * count
    assert 0 in error.errors and error.__cause__ is error.errors[0]
    assert all(isinstance(each, kiwipy.KiwiError) for each in error.errors.values())


def test_the_thread_communicator_sends_broadcast_batches(
    thread_communicator: rmq.RmqThreadCommunicator,
) -> None:
    listener = _Listener(600)
    thread_communicator.add_broadcast_subscriber(listener)
    assert thread_communicator.broadcast_send_many((n, "thread") for n in range(600)) is None
    assert listener.done.wait(WAIT)
    assert listener.heard == [(n, "thread", None, None) for n in range(600)]


class _Recording(encoders.Encoder):
    """msgpack that records the thread each task body is encoded on."""

    name = "recording"

    def __init__(self) -> None:
        self.threads: list[str] = []

    def _encode(self, obj: Any) -> bytes:
        if isinstance(obj, tuple) and str(obj[0]).startswith("task-"):
            self.threads.append(threading.current_thread().name)
        return encoders.MSGPACK.encode(obj)

    def _decode(self, data: bytes) -> Any:
        return encoders.MSGPACK.decode(data)


def test_tasks_are_encoded_on_the_callers_thread(rmq_uri: str, names: Any) -> None:
    encoder = _Recording()
    comm = rmq.RmqThreadCommunicator.connect(rmq_uri, **names.options(encoder=encoder))
    try:
        for i in range(5):
            comm.task_send(f"task-{i}", no_reply=True)
        # the first send declares the queue (on the loop); every later one is encoded here
        assert encoder.threads[1:] == [threading.current_thread().name] * 4
    finally:
        comm.close()


def test_quick_sends_report_unroutable_tasks(
    thread_communicator: rmq.RmqThreadCommunicator, names: Any, rmq_uri: str
) -> None:
    comm = thread_communicator
    comm.task_send(1, no_reply=True)  # declares the queue; the next sends take the quick path
    comm.task_send(2, no_reply=True)

    async def delete() -> None:
        connection = await aiormq.connect(rmq_uri)
        channel = await connection.channel()
        await channel.queue_delete(names.task_queue)
        await connection.close()

    asyncio.run(delete())
    with pytest.raises(kiwipy.UnroutableError):
        comm.task_send(3)
