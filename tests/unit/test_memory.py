"""The in-process transport beyond the contract: brokers, redelivery, threads, pull mode."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import kiwipy
from kiwipy import encoders, memory
from tests.contract import Inbox, settle

Comm = memory.AsyncMemoryCommunicator


@pytest.fixture
def uri(unique_name: str) -> Iterator[str]:
    yield f"memory://{unique_name}"
    memory.drop_broker(unique_name)


@pytest.fixture
async def connect(uri: str) -> AsyncIterator[Any]:
    """Connect async communicators to this test's broker; all are closed at the end."""
    made: list[Comm] = []

    async def make(**options: Any) -> Comm:
        made.append(await memory.async_connect(uri, **options))
        return made[-1]

    yield make
    for comm in made:
        await comm.disconnect()


async def spin(iterations: int = 20) -> None:
    """Let the loop run callbacks posted to it (a redelivery loop would show up here)."""
    for _ in range(iterations):
        await asyncio.sleep(0)


# Brokers and uris


@pytest.mark.parametrize(
    ("uri", "name"),
    [("memory://", ""), ("memory://a", "a"), ("memory://a/", "a"), ("memory:///", "")],
)
def test_broker_name(uri: str, name: str) -> None:
    assert memory.broker_name(uri) == name


def test_broker_name_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="memory://"):
        memory.broker_name("amqp://localhost")


def test_named_brokers(unique_name: str) -> None:
    broker = memory.get_broker(unique_name)
    assert memory.get_broker(unique_name) is broker
    assert memory.get_broker() is memory.get_broker("")
    assert memory.get_broker(unique_name) is not memory.get_broker()
    memory.drop_broker(unique_name)
    assert memory.get_broker(unique_name) is not broker
    memory.drop_broker(unique_name)


async def test_brokers_are_isolated(unique_name: str) -> None:
    one = await memory.async_connect(f"memory://{unique_name}-1")
    two = await memory.async_connect(f"memory://{unique_name}-2")
    try:
        await one.add_rpc_subscriber(lambda _c, msg: "one", "same-id")
        await two.add_rpc_subscriber(lambda _c, msg: "two", "same-id")  # no conflict
        await two.add_task_subscriber(lambda _c, task: "two")
        future = await one.task_send("only for broker one")
        await spin()
        assert future is not None and not future.done()
        assert one.broker.queue_stats(memory.DEFAULT_TASK_QUEUE) == (1, 0)
        assert await settle(await one.rpc_send("same-id", None)) == "one"
    finally:
        await one.disconnect()
        await two.disconnect()
        memory.drop_broker(f"{unique_name}-1")
        memory.drop_broker(f"{unique_name}-2")


async def test_options(connect: Any) -> None:
    with pytest.raises(TypeError, match="bogus"):
        memory.AsyncMemoryCommunicator(memory.get_broker(), bogus=1)  # type: ignore[call-arg]
    ignored = await connect(message_exchange="x", testing_mode=True, task_prefetch_size=9)
    assert ignored.encoder is None
    assert (await connect(encoder="json")).encoder is encoders.JSON
    pair = await connect(encoder=json.dumps, decoder=json.loads)
    assert isinstance(pair.encoder, encoders.CallableEncoder)


async def test_lifecycle(uri: str) -> None:
    comm = memory.AsyncMemoryCommunicator(memory.get_broker(memory.broker_name(uri)))
    assert not comm.connected()
    with pytest.raises(RuntimeError, match="connect"):
        await comm.broadcast_send("too early")
    async with comm:
        assert comm.connected()
        assert comm.loop is asyncio.get_running_loop()
    assert not comm.connected()
    with pytest.raises(kiwipy.CommunicatorClosed):
        await comm.connect()


# Tasks


async def test_subscribers_receive_the_communicator(connect: Any) -> None:
    comm = await connect()
    await comm.add_task_subscriber(lambda c, task: c is comm)
    assert await settle(await comm.task_send(None)) is True


async def test_universal_rejection_is_not_redelivered_in_a_loop(connect: Any) -> None:
    comm = await connect()
    calls = Counter[str]()

    def reject(_c: Any, task: Any) -> None:
        calls["reject"] += 1
        raise kiwipy.TaskRejected

    await comm.add_task_subscriber(reject)
    future = await comm.task_send("unwanted")
    await spin()
    assert calls["reject"] == 1
    assert comm.broker.queue_stats(memory.DEFAULT_TASK_QUEUE) == (1, 0)  # waiting, not looping
    # A new subscriber changes the picture: the task is offered again, in subscriber order.
    await comm.add_task_subscriber(lambda _c, task: f"{task} accepted")
    assert await settle(future) == "unwanted accepted"
    assert calls["reject"] == 2


async def test_unfinished_tasks_go_back_to_the_front_in_order(connect: Any) -> None:
    sender, quitter = await connect(), await connect()
    futures = [await sender.task_send(n) for n in range(4)]
    queue = await quitter.task_queue(memory.DEFAULT_TASK_QUEUE)
    held = []
    async for task in queue:
        held.append(task)
        if len(held) == 2:
            break
    assert [task.body for task in held] == [0, 1]
    assert quitter.broker.queue_stats(memory.DEFAULT_TASK_QUEUE) == (2, 2)
    await quitter.disconnect()
    assert sender.broker.queue_stats(memory.DEFAULT_TASK_QUEUE) == (4, 0)
    order = Inbox()

    def record(_c: Any, task: Any) -> Any:
        order.put(task)
        return task

    await sender.add_task_subscriber(record)
    assert [await settle(future) for future in futures] == [0, 1, 2, 3]
    assert order.items == [0, 1, 2, 3]


async def test_prefetch_count_limits_tasks_in_progress(connect: Any) -> None:
    worker = await connect(task_prefetch_count=1)
    gates = {n: asyncio.get_running_loop().create_future() for n in range(3)}
    await worker.add_task_subscriber(lambda _c, task: gates[task])
    futures = [await worker.task_send(n) for n in range(3)]
    await spin()
    assert worker.broker.queue_stats(memory.DEFAULT_TASK_QUEUE) == (2, 1)
    for n in range(3):
        gates[n].set_result(n)
    levels = [await settle(future) for future in futures]
    assert [await settle(level) for level in levels] == [0, 1, 2]


async def test_cancelled_future_from_subscriber(connect: Any) -> None:
    comm = await connect()
    gate = asyncio.get_running_loop().create_future()
    await comm.add_task_subscriber(lambda _c, task: gate)
    await comm.add_rpc_subscriber(lambda _c, msg: gate, "rpc")
    task_level = await settle(await comm.task_send("t"))
    rpc_level = await settle(await comm.rpc_send("rpc", "m"))
    gate.cancel()
    for level in (task_level, rpc_level):
        with pytest.raises(asyncio.CancelledError):
            await settle(level)
    assert comm.broker.queue_stats(memory.DEFAULT_TASK_QUEUE) == (0, 0)  # final, not requeued


async def test_undecodable_task_is_answered_and_dead_lettered(connect: Any) -> None:
    def decode(data: bytes) -> Any:
        obj = json.loads(data)
        if isinstance(obj, list) and obj[0] == "poison":
            raise ValueError("poisoned")
        return obj

    pair = {"encoder": encoders.CallableEncoder(encoders.JSON.encode, decode, "picky")}
    sender, worker = await connect(**pair), await connect(**pair)
    await worker.add_task_subscriber(lambda _c, task: f"{task} ok")
    with pytest.raises(kiwipy.RemoteException, match="poisoned"):
        await settle(await sender.task_send("poison"))
    assert await settle(await sender.task_send("fine")) == "fine ok"
    letters = worker.broker.dead_letters(memory.DEFAULT_TASK_QUEUE)
    assert len(letters) == 1 and "poisoned" in letters[0][1]


async def test_unencodable_result_is_dead_lettered(connect: Any) -> None:
    comm = await connect(encoder="yaml")
    await comm.add_task_subscriber(lambda _c, task: threading.Lock())
    with pytest.raises(kiwipy.RemoteException, match="yaml"):
        await settle(await comm.task_send("x"))
    assert len(comm.broker.dead_letters(memory.DEFAULT_TASK_QUEUE)) == 1
    assert comm.broker.queue_stats(memory.DEFAULT_TASK_QUEUE) == (0, 0)


async def test_encoder_round_trip_is_real(connect: Any) -> None:
    comm = await connect(encoder="json")
    await comm.add_task_subscriber(lambda _c, task: task)
    assert await settle(await comm.task_send((1, 2))) == [1, 2]  # JSON has no tuples


async def test_messages_over_max_message_size_are_refused(connect: Any) -> None:
    """Every send checks the encoded size, as on RabbitMQ; the communicator goes on."""
    comm = await connect(encoder="json", max_message_size=1000)
    await comm.add_task_subscriber(lambda _c, task: task)
    ident = await comm.add_rpc_subscriber(lambda _c, msg: msg, "echo")
    await comm.add_rpc_subscriber(lambda _c, msg: "r" * 2000, "big-reply")
    big = "x" * 2000
    sends = [
        lambda: comm.task_send(big),
        lambda: comm.rpc_send(ident, big),
        lambda: comm.broadcast_send(big),
        lambda: comm.task_send_many(["small", big]),
        lambda: comm.rpc_send_many([(ident, "small"), (ident, big)]),
        lambda: comm.broadcast_send_many([("small",), (big,)]),
    ]
    for send in sends:
        with pytest.raises(kiwipy.MessageTooLarge, match="over the limit of 1000"):
            await send()
    with pytest.raises(kiwipy.RemoteException, match="MessageTooLarge|over the limit"):
        await settle(await comm.rpc_send("big-reply", 1))
    assert await settle(await comm.task_send("ok")) == "ok"
    assert await settle(await comm.rpc_send(ident, "ok")) == "ok"
    assert comm.broker.queue_stats(memory.DEFAULT_TASK_QUEUE) == (0, 0)


async def test_bad_names_in_options_are_refused(uri: str) -> None:
    """As on RabbitMQ, although the exchanges are not used here."""
    for name in ["", "amq.tasks", "q" * 249]:
        with pytest.raises(kiwipy.InvalidName, match="task queue name"):
            await memory.async_connect(uri, task_queue=name)
    with pytest.raises(kiwipy.InvalidName, match="message_exchange option"):
        await memory.async_connect(uri, message_exchange="x" * 300)


# Pull mode


async def test_next_task_waits_for_a_task(connect: Any) -> None:
    comm = await connect()
    queue = await comm.task_queue("pull")

    async def send_later() -> Any:
        await spin(3)
        return await queue.task_send("late")

    sending = asyncio.create_task(send_later())
    async with queue.next_task(timeout=5.0) as task:
        assert task.body == "late"
        task.process().set_result("got it")
    assert await settle(await sending) == "got it"


async def test_next_task_no_ack(connect: Any) -> None:
    comm = await connect()
    queue = await comm.task_queue("no-ack")
    future = await queue.task_send("once")
    async with queue.next_task(no_ack=True) as task:
        assert comm.broker.queue_stats("no-ack") == (0, 0)
        task.process().set_result("done")
    assert await settle(future) == "done"


async def test_task_state_errors(connect: Any) -> None:
    comm = await connect()
    queue = await comm.task_queue("states")
    future = await queue.task_send("s")
    async with queue.next_task() as task:
        outcome = task.process()
        with pytest.raises(kiwipy.InvalidStateError, match="processing"):
            task.process()
        outcome.set_result(1)
    assert await settle(future) == 1
    assert task.state == "finished"
    with pytest.raises(kiwipy.InvalidStateError):
        await task.requeue()


@pytest.mark.parametrize("drop_on", ["loop thread", "other thread"])
async def test_garbage_collected_outcome_requeues(connect: Any, drop_on: str) -> None:
    comm = await connect()
    queue = await comm.task_queue("gc")
    future = await queue.task_send("collect me")
    async with queue.next_task() as task:
        holder = [task.process()]
        if drop_on == "other thread":

            def drop() -> None:
                holder.clear()
                gc.collect()

            worker = threading.Thread(target=drop)
            worker.start()
            worker.join()
        else:
            holder.clear()
            gc.collect()
        await spin()
        assert task.state == "requeued"
    async with queue.next_task() as task:
        task.process().set_result("second chance")
    assert await settle(future) == "second chance"


# RPC


async def test_rpc_identifiers_compare_as_strings(connect: Any) -> None:
    comm = await connect()
    pid = uuid.uuid4()
    await comm.add_rpc_subscriber(lambda _c, msg: msg, identifier=str(pid))
    assert await settle(await comm.rpc_send(pid, "by uuid")) == "by uuid"  # as plumpy does


async def test_closing_responder_loses_the_reply(connect: Any) -> None:
    requester, responder = await connect(), await connect()

    async def hang(_c: Any, msg: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    started = asyncio.Event()
    await responder.add_rpc_subscriber(hang, "hang")
    future = await requester.rpc_send("hang", None)
    await started.wait()
    await responder.disconnect()
    with pytest.raises(kiwipy.ReplyLost):
        await settle(future)


async def test_communicator_on_a_closed_loop_is_dropped(connect: Any, uri: str) -> None:
    """A communicator whose loop closed without disconnecting is a lost connection."""
    sender, survivor = await connect(), await connect()

    async def abandon() -> None:
        ghost = await memory.async_connect(uri)
        await ghost.add_rpc_subscriber(lambda _c, msg: msg, "ghost")
        await ghost.add_task_subscriber(lambda _c, task: "ghost")

    await asyncio.to_thread(asyncio.run, abandon())  # its loop is closed, ghost never left
    await survivor.add_task_subscriber(lambda _c, task: "survivor")
    assert await settle(await sender.task_send(1)) == "survivor"
    with pytest.raises(kiwipy.UnroutableError):
        await sender.rpc_send("ghost", None)


async def test_undecodable_broadcast_is_dropped(
    connect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sender, receiver = await connect(encoder="json"), await connect(encoder="msgpack")
    inbox = Inbox()
    await receiver.add_broadcast_subscriber(lambda *args: inbox.put(args[1]))
    with caplog.at_level(logging.ERROR, logger="kiwipy"):
        await sender.broadcast_send("json bytes")
        await spin()
    assert inbox.items == []
    assert "cannot be decoded" in caplog.text


# Threads


def test_many_threads_share_one_broker(uri: str) -> None:
    """Thread communicators and async ones on their own loops, 1,000 tasks, each done once."""
    done: Counter[int] = Counter()
    lock = threading.Lock()

    def work(_c: Any, task: int) -> int:
        with lock:
            done[task] += 1
        return task * 2

    stop = threading.Event()

    def async_worker() -> None:
        async def serve() -> None:
            comm = await memory.async_connect(uri)
            await comm.add_task_subscriber(work)
            await asyncio.to_thread(stop.wait)
            await comm.disconnect()

        asyncio.run(serve())

    workers = [memory.connect(uri) for _ in range(3)]
    for worker in workers:
        worker.add_task_subscriber(work)
    loop_thread = threading.Thread(target=async_worker)
    loop_thread.start()
    senders = [memory.connect(uri) for _ in range(4)]

    def send(comm: memory.MemoryCommunicator, start: int) -> list[Any]:
        return [comm.task_send(n) for n in range(start, start + 250)]

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            batches = list(pool.map(send, senders, range(0, 1000, 250)))
        results = [future.result(10) for batch in batches for future in batch]
        assert results == [n * 2 for n in range(1000)]
        assert done == Counter(range(1000))
    finally:
        stop.set()
        loop_thread.join(10)
        for comm in workers + senders:
            comm.close()


def test_thread_and_async_communicators_talk(uri: str) -> None:
    thread_comm = memory.connect(uri, encoder="yaml")
    try:
        thread_comm.add_rpc_subscriber(lambda c, msg: (c is thread_comm, msg), "thread")

        async def call() -> Any:
            comm = await memory.async_connect(uri, encoder="yaml")
            try:
                return await settle(await comm.rpc_send("thread", "hi"))
            finally:
                await comm.disconnect()

        assert asyncio.run(call()) == (True, "hi")
    finally:
        thread_comm.close()
