"""The asyncio RmqCommunicator against the real broker: RPC, tasks, broadcasts, subscribers."""

from __future__ import annotations

import asyncio
import concurrent.futures

import aio_pika
import pytest
from pamqp import commands as spec

import kiwipy
from kiwipy import rmq
from kiwipy.rmq import defaults

WAIT = 5.0


async def test_rpc_round_trip(communicator: rmq.RmqCommunicator) -> None:
    received = []

    def double(comm, msg):
        received.append((comm, msg))
        return msg * 2

    identifier = await communicator.add_rpc_subscriber(double, "doubler")
    future = await communicator.rpc_send("doubler", 21)
    assert identifier == "doubler"
    assert await asyncio.wait_for(future, WAIT) == 42
    assert received == [(communicator, 21)]


async def test_rpc_generated_identifier_is_usable(communicator: rmq.RmqCommunicator) -> None:
    identifier = await communicator.add_rpc_subscriber(lambda _c, msg: msg.upper())
    assert isinstance(identifier, str) and identifier
    assert await (await communicator.rpc_send(identifier, "hi")) == "HI"


async def test_rpc_remote_exception(communicator: rmq.RmqCommunicator) -> None:
    def fail(_comm, _msg):
        raise ValueError("bad thing")

    await communicator.add_rpc_subscriber(fail, "failing")
    future = await communicator.rpc_send("failing", None)
    with pytest.raises(kiwipy.RemoteException) as info:
        await asyncio.wait_for(future, WAIT)
    assert info.value.args[0] == "bad thing"
    assert info.value.remote_type == "builtins.ValueError"
    assert "raise ValueError" in info.value.remote_traceback


async def test_rpc_unroutable(communicator: rmq.RmqCommunicator) -> None:
    with pytest.raises(kiwipy.UnroutableError) as info:
        await communicator.rpc_send("nobody-here", "hello")
    assert str(info.value) == "no subscriber with RPC identifier 'nobody-here'"
    assert communicator.pending_replies == 0


async def test_rpc_nested_futures(communicator: rmq.RmqCommunicator) -> None:
    inner: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    outer: asyncio.Future[asyncio.Future[str]] = asyncio.get_running_loop().create_future()
    await communicator.add_rpc_subscriber(lambda _c, _m: outer, "nested")
    level0 = await communicator.rpc_send("nested", None)
    level1 = await asyncio.wait_for(level0, WAIT)
    assert asyncio.isfuture(level1) and not level1.done()
    outer.set_result(inner)
    level2 = await asyncio.wait_for(level1, WAIT)
    assert asyncio.isfuture(level2)
    inner.set_result("deep")
    assert await asyncio.wait_for(level2, WAIT) == "deep"


async def test_rpc_concurrent_future_is_one_level(communicator: rmq.RmqCommunicator) -> None:
    done: concurrent.futures.Future[int] = concurrent.futures.Future()
    await communicator.add_rpc_subscriber(lambda _c, _m: done, "cf")
    level0 = await communicator.rpc_send("cf", None)
    level1 = await asyncio.wait_for(level0, WAIT)
    done.set_result(7)
    assert await asyncio.wait_for(level1, WAIT) == 7


async def test_subscriber_kinds_are_all_awaited(communicator: rmq.RmqCommunicator) -> None:
    """Plain functions, coroutine functions and objects with ``async __call__`` (B11)."""

    class AsyncCallable:
        async def __call__(self, _comm, msg):
            await asyncio.sleep(0)
            return f"object:{msg}"

    async def coroutine(_comm, msg):
        return f"coroutine:{msg}"

    await communicator.add_rpc_subscriber(AsyncCallable(), "obj")
    await communicator.add_rpc_subscriber(coroutine, "coro")
    await communicator.add_rpc_subscriber(lambda _c, msg: f"plain:{msg}", "plain")
    results = [await (await communicator.rpc_send(i, 1)) for i in ("obj", "coro", "plain")]
    assert results == ["object:1", "coroutine:1", "plain:1"]


async def test_rpc_cancelled_future_replies_cancelled(communicator: rmq.RmqCommunicator) -> None:
    """B4: a returned future that gets cancelled ends the sender's future, it never hangs."""
    pending: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    await communicator.add_rpc_subscriber(lambda _c, _m: pending, "cancelling")
    level1 = await asyncio.wait_for(await communicator.rpc_send("cancelling", None), WAIT)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(level1, WAIT)


async def test_duplicate_rpc_identifier_here(communicator: rmq.RmqCommunicator) -> None:
    await communicator.add_rpc_subscriber(lambda _c, m: m, "dup")
    with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
        await communicator.add_rpc_subscriber(lambda _c, m: m, "dup")
    assert await (await communicator.rpc_send("dup", 5)) == 5


async def test_remove_rpc_subscriber(communicator: rmq.RmqCommunicator) -> None:
    await communicator.add_rpc_subscriber(lambda _c, m: m, "gone")
    await communicator.remove_rpc_subscriber("gone")
    with pytest.raises(kiwipy.UnroutableError):
        await communicator.rpc_send("gone", 1)
    with pytest.raises(ValueError, match="Unknown subscriber 'gone'"):
        await communicator.remove_rpc_subscriber("gone")


async def test_broadcast_positional_and_filtered(communicator: rmq.RmqCommunicator) -> None:
    everything: list[tuple] = []
    filtered: list[tuple] = []
    arrived = asyncio.Event()

    def all_of_them(*args):
        everything.append(args)
        if len(everything) == 2:
            arrived.set()

    await communicator.add_broadcast_subscriber(all_of_them, "all")
    only = kiwipy.BroadcastFilter(lambda *args: filtered.append(args), subject="purchase.*")
    await communicator.add_broadcast_subscriber(only, "filtered")
    ack = await communicator.broadcast_send("car", sender="alice", subject="purchase.car")
    await communicator.broadcast_send("rain", sender="bob", subject="weather", correlation_id=7)
    await asyncio.wait_for(arrived.wait(), WAIT)
    assert isinstance(ack, spec.Basic.Ack)
    assert everything == [
        (communicator, "car", "alice", "purchase.car", None),
        (communicator, "rain", "bob", "weather", 7),
    ]
    assert filtered == [(communicator, "car", "alice", "purchase.car", None)]


async def test_broadcast_subscriber_errors_are_contained(communicator: rmq.RmqCommunicator) -> None:
    got = asyncio.Event()

    def broken(*_args):
        raise RuntimeError("ignored")

    await communicator.add_broadcast_subscriber(broken, "broken")
    await communicator.add_broadcast_subscriber(lambda *_a: got.set(), "working")
    assert await communicator.broadcast_send("x")
    await asyncio.wait_for(got.wait(), WAIT)


async def test_remove_broadcast_subscriber(communicator: rmq.RmqCommunicator) -> None:
    got: list = []
    heard = asyncio.Event()
    await communicator.add_broadcast_subscriber(lambda *a: got.append(a[1]), "b")
    await communicator.remove_broadcast_subscriber("b")
    # every subscriber of a communicator is handed the same delivery: once the control
    # subscriber heard the broadcast, a removed one that still listened would have too
    await communicator.add_broadcast_subscriber(lambda *_a: heard.set(), "control")
    await communicator.broadcast_send("after removal")
    await asyncio.wait_for(heard.wait(), WAIT)
    assert got == []
    with pytest.raises(ValueError, match="Broadcast subscriber 'b' unknown"):
        await communicator.remove_broadcast_subscriber("b")


async def test_broadcasts_sent_while_unsubscribed_arrive_on_resubscribe(
    communicator: rmq.RmqCommunicator,
) -> None:
    """As in kiwipy 0.9, the broadcast queue stays bound while nobody consumes it."""
    got: list = []
    await communicator.add_broadcast_subscriber(lambda *a: got.append(a[1]), "first")
    await communicator.remove_broadcast_subscriber("first")
    await communicator.broadcast_send("meanwhile")
    arrived = asyncio.Event()
    await communicator.add_broadcast_subscriber(lambda *a: arrived.set(), "second")
    await asyncio.wait_for(arrived.wait(), WAIT)
    assert got == []


async def test_task_round_trip(communicator: rmq.RmqCommunicator) -> None:
    tasks = []

    def on_task(comm, task):
        tasks.append((comm, task))
        return task * 10

    await communicator.add_task_subscriber(on_task)
    future = await communicator.task_send(4)
    assert await asyncio.wait_for(future, WAIT) == 40
    assert tasks == [(communicator, 4)]


async def test_task_no_reply(communicator: rmq.RmqCommunicator) -> None:
    done = asyncio.Event()
    await communicator.add_task_subscriber(lambda _c, _t: done.set())
    assert await communicator.task_send("fire", no_reply=True) is None
    await asyncio.wait_for(done.wait(), WAIT)


async def test_task_exception_and_nested(communicator: rmq.RmqCommunicator) -> None:
    later: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_task(_comm, task):
        if task == "fail":
            raise RuntimeError("task boom")
        return later

    await communicator.add_task_subscriber(on_task)
    failing = await communicator.task_send("fail")
    with pytest.raises(kiwipy.RemoteException, match="task boom"):
        await asyncio.wait_for(failing, WAIT)
    nested = await asyncio.wait_for(await communicator.task_send("later"), WAIT)
    later.set_result(3)
    assert await asyncio.wait_for(nested, WAIT) == 3


async def test_tasks_wait_for_a_worker(communicator: rmq.RmqCommunicator, raw_channel, names):
    future = await communicator.task_send("queued")
    await _wait_ready(raw_channel, names.task_queue, 1)  # in the queue, nobody took it
    assert not future.done()
    await communicator.add_task_subscriber(lambda _c, t: f"done {t}")
    assert await asyncio.wait_for(future, WAIT) == "done queued"


async def test_custom_task_queue(communicator: rmq.RmqCommunicator, names) -> None:
    queue = await communicator.task_queue(f"{names.prefix}.custom", prefetch_count=2)
    identifier = await queue.add_task_subscriber(lambda comm, t: (comm is communicator, t))
    assert await asyncio.wait_for(await queue.task_send("x"), WAIT) == (True, "x")
    await queue.remove_task_subscriber(identifier)
    with pytest.raises(ValueError):
        await queue.remove_task_subscriber(identifier)


async def test_remove_task_subscriber_stops_consuming(
    communicator: rmq.RmqCommunicator, raw_channel, names
) -> None:
    identifier = await communicator.add_task_subscriber(lambda _c, t: t)
    await communicator.remove_task_subscriber(identifier)
    future = await communicator.task_send(1)
    # ready in the queue: no consumer holds it (a delivered message is no longer counted)
    await _wait_ready(raw_channel, names.task_queue, 1)
    assert not future.done()
    with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
        await communicator.add_task_subscriber(lambda _c, t: t, "same")
        await communicator.add_task_subscriber(lambda _c, t: t, "same")


async def test_message_too_large_is_refused_before_sending(rmq_uri, names) -> None:
    comm = await rmq.async_connect(rmq_uri, **names.options(max_message_size=1000))
    try:
        with pytest.raises(kiwipy.MessageTooLarge) as info:
            await comm.task_send("x" * 2000)
        assert (
            info.value.limit == 1000 and info.value.size >= 2000
        )  # a lower bound: refused before encoding
        assert comm.pending_replies == 0
    finally:
        await comm.disconnect()


async def test_json_encoder(rmq_uri, names) -> None:
    comm = await rmq.async_connect(rmq_uri, **names.options(encoder="json"))
    try:
        await comm.add_rpc_subscriber(lambda _c, msg: {"got": msg}, "j")
        assert await (await comm.rpc_send("j", [1, 2])) == {"got": [1, 2]}
    finally:
        await comm.disconnect()


async def test_upstream_encoder_callables_are_accepted(rmq_uri, names) -> None:
    comm = await rmq.async_connect(
        rmq_uri, **names.options(encoder=defaults.ENCODER, decoder=defaults.DECODER)
    )
    try:
        await comm.add_task_subscriber(lambda _c, t: t)
        assert await (await comm.task_send((1, "a"))) == (1, "a")
    finally:
        await comm.disconnect()


async def test_server_properties_and_loop(communicator: rmq.RmqCommunicator) -> None:
    props = communicator.server_properties
    assert props["product"] == "RabbitMQ"
    assert communicator.loop is asyncio.get_running_loop()
    assert communicator.connected()


async def test_close_callback_and_disconnect(rmq_uri, names) -> None:
    comm = await rmq.async_connect(rmq_uri, **names.options())
    calls = []
    events = []
    comm.add_close_callback(lambda sender, exc: calls.append(sender))
    comm.add_connection_callback(events.append)
    await comm.disconnect()
    await comm.disconnect()  # idempotent
    assert len(calls) == 1
    assert events == ["closed"]
    assert not comm.connected()
    with pytest.raises(kiwipy.CommunicatorClosed):
        await comm.task_send(1)


async def test_disconnect_fails_waiting_futures(rmq_uri, names) -> None:
    """B16 (close part): a future waiting for a reply ends when the communicator closes."""
    comm = await rmq.async_connect(rmq_uri, **names.options())
    future = await comm.task_send("nobody will take it")
    await comm.disconnect()
    with pytest.raises(kiwipy.CommunicatorClosed):
        await asyncio.wait_for(future, WAIT)


async def test_communicator_from_an_aio_pika_connection(rmq_uri, names) -> None:
    connection = await aio_pika.connect_robust(url=rmq_uri)
    comm = rmq.RmqCommunicator(connection, **names.options())
    async with comm:
        await comm.add_rpc_subscriber(lambda _c, m: m + 1, "plus")
        assert await (await comm.rpc_send("plus", 1)) == 2
    assert connection.is_closed


async def test_unknown_option_is_a_type_error(rmq_uri) -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        await rmq.async_connect(rmq_uri, no_such_option=1)


async def test_heartbeat_from_the_url(rmq_uri, names) -> None:
    comm = await rmq.async_connect(f"{rmq_uri}?heartbeat=7", **names.options())
    try:
        assert comm._connection.transport.connection.connection_tune.heartbeat == 7
    finally:
        await comm.disconnect()


async def _wait_ready(channel, queue: str, count: int) -> None:
    """Wait until *queue* holds *count* messages ready for delivery (none taken by a consumer)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while (await channel.queue_declare(queue, passive=True)).message_count != count:
        assert loop.time() < deadline, f"{queue} never held {count} ready messages"
        await asyncio.sleep(0.02)
