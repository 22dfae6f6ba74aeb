"""Task queues: upstream bugs B3-B7, bad input parking, queue declaration, pull mode."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import aio_pika
import aiormq
import pytest
import yaml
from pamqp import commands as spec

import kiwipy
from kiwipy import rmq
from kiwipy.rmq import defaults
from kiwipy.rmq._options import DEFAULTS

WAIT = 5.0


async def _dead_letters(channel, queue: str) -> list:
    """Every message parked in ``<queue>.dead`` (taken off it)."""
    parked = []
    while True:
        message = await channel.basic_get(f"{queue}.dead", no_ack=True)
        if not isinstance(message.delivery, spec.Basic.GetOk):
            return parked
        parked.append(message)


async def test_b3_no_other_subscriber_runs_after_an_exception(communicator) -> None:
    calls = []

    def first(_c, task):
        calls.append("first")
        raise RuntimeError("first failed")

    def second(_c, task):
        calls.append("second")
        return "second"

    await communicator.add_task_subscriber(first)
    await communicator.add_task_subscriber(second)
    with pytest.raises(kiwipy.RemoteException, match="first failed"):
        await asyncio.wait_for(await communicator.task_send(1), WAIT)
    assert calls == ["first"]


async def test_b4_cancelled_future_is_replied_and_acked(communicator, raw_channel, names) -> None:
    """A cancelled returned future gives a cancelled reply, once: no redelivery loop."""
    calls = []

    def subscriber(_c, task):
        calls.append(task)
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        return future

    await communicator.add_task_subscriber(subscriber)
    outer = await communicator.task_send("t")
    inner = await asyncio.wait_for(outer, WAIT)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(inner, WAIT)
    # "Not redelivered" without a fixed sleep: the worker settles "t" right after its reply
    # is confirmed, and a first requeue is immediate, so a requeued "t" would reach this (only)
    # consumer ahead of a control task sent once the reply arrived.
    control = await asyncio.wait_for(await communicator.task_send("control"), WAIT)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(control, WAIT)
    assert calls == ["t", "control"]
    ok = await raw_channel.queue_declare(names.task_queue, passive=True)
    assert ok.message_count == 0


async def test_b5_cancelling_subscriber_acks_with_cancelled_reply(communicator, names) -> None:
    def subscriber(_c, _task):
        raise kiwipy.CancelledError()

    await communicator.add_task_subscriber(subscriber)
    future = await communicator.task_send("x")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(future, WAIT)


async def test_b6_rejected_everywhere_is_not_a_tight_loop(communicator) -> None:
    times: list[float] = []
    delivered = asyncio.Event()

    def rejecting(_c, _task):
        times.append(time.monotonic())
        delivered.set()
        raise kiwipy.TaskRejected("not mine")

    await communicator.add_task_subscriber(rejecting)
    future = await communicator.task_send("nobody wants me")
    # kiwipy 0.9 redelivered ~150 times in 2 s. Here the first requeue is immediate, then the
    # task is held reject_backoff seconds (0.5 by default), then twice that, ...
    backoff = DEFAULTS["reject_backoff"]
    while len(times) < 4:
        await asyncio.wait_for(delivered.wait(), WAIT)
        delivered.clear()
    assert not future.done()
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert gaps[1] >= 0.9 * backoff and gaps[2] >= 1.8 * backoff, gaps


async def test_b6_rejected_task_goes_to_another_worker(communicator, communicator2) -> None:
    def rejecting(_c, _task):
        raise kiwipy.TaskRejected

    await communicator.add_task_subscriber(rejecting)
    await communicator2.add_task_subscriber(lambda _c, task: f"taken {task}")
    futures = [await communicator.task_send(i) for i in range(4)]
    results = await asyncio.wait_for(asyncio.gather(*futures), WAIT)
    assert results == [f"taken {i}" for i in range(4)]


async def test_b7_connection_errors_are_not_task_rejected(rmq_uri, names) -> None:
    # A plain (non-reconnecting) aio-pika connection: once it is gone, sends fail at once.
    comm = await rmq.async_connect(rmq_uri, aio_pika.connect, **names.options())
    await comm.task_send("declare the queue first", no_reply=True)
    await comm._connection.transport.connection.close()  # the connection goes, not a rejection
    try:
        with pytest.raises(kiwipy.ConnectionLost) as info:
            await comm.task_send("x")
        assert not isinstance(info.value, kiwipy.TaskRejected)
        assert isinstance(info.value, aio_pika.exceptions.ChannelInvalidStateError)
    finally:
        await comm.disconnect()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{{{ not: yaml: at all", "undecodable"),
        (yaml.dump({"not": "a pair"}, encoding="utf-8"), "malformed"),
        (yaml.dump(["too", "many", "items"], encoding="utf-8"), "malformed"),
    ],
)
async def test_bad_task_is_parked_and_answered(communicator, raw_channel, names, body, reason):
    processed = []
    await communicator.add_task_subscriber(lambda _c, task: processed.append(task) or "ok")
    await communicator.task_send("declare", no_reply=True)
    reply_queue = (await raw_channel.queue_declare("", exclusive=True)).queue
    # as kiwipy 0.9 senders do: replies come through the task exchange
    await raw_channel.queue_bind(reply_queue, names.task_exchange, routing_key=reply_queue)
    await raw_channel.basic_publish(
        body,
        exchange=names.task_exchange,
        routing_key=names.task_queue,
        properties=spec.Basic.Properties(correlation_id="bad-1", reply_to=reply_queue),
        mandatory=True,
    )
    good = await communicator.task_send("good")
    assert await asyncio.wait_for(good, WAIT) == "ok"
    assert processed == ["declare", "good"]
    reply = await _get(raw_channel, reply_queue)
    decoded = yaml.load(reply.body, Loader=yaml.FullLoader)
    assert reply.header.properties.correlation_id == "bad-1"
    assert (
        decoded["exception_type"] == "kiwipy._replies.MalformedMessage" or reason == "undecodable"
    )
    assert "host" in decoded and decoded["exception"]
    [parked] = await _dead_letters(raw_channel, names.task_queue)
    assert parked.body == body
    headers = parked.header.properties.headers
    assert headers["x-kiwipy-reason"] == reason
    assert headers["x-kiwipy-original-queue"] == names.task_queue
    assert headers["x-kiwipy-original-exchange"] == names.task_exchange
    assert parked.header.properties.correlation_id == "bad-1"


async def _get(channel, queue: str, timeout: float = WAIT):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        message = await channel.basic_get(queue, no_ack=True)
        if isinstance(message.delivery, spec.Basic.GetOk):
            return message
        assert asyncio.get_running_loop().time() < deadline, f"nothing in {queue}"
        await asyncio.sleep(0.02)


async def test_oversized_task_is_parked(rmq_uri, names, raw_channel) -> None:
    comm = await rmq.async_connect(rmq_uri, **names.options(max_message_size=100))
    try:
        await comm.add_task_subscriber(lambda _c, task: task)
        big = yaml.dump(("x" * 500, False), encoding="utf-8")
        await raw_channel.basic_publish(
            big, exchange=names.task_exchange, routing_key=names.task_queue
        )
        assert await asyncio.wait_for(await comm.task_send("small"), WAIT) == "small"
        parked = await _get(raw_channel, f"{names.task_queue}.dead")
        assert parked.header.properties.headers["x-kiwipy-reason"] == "too-large"
        assert parked.body == big
    finally:
        await comm.disconnect()


async def test_unencodable_result_is_an_error_reply(communicator) -> None:
    import threading

    await communicator.add_task_subscriber(lambda _c, _t: threading.Lock())
    with pytest.raises(kiwipy.RemoteException, match="cannot encode"):
        await asyncio.wait_for(await communicator.task_send("x"), WAIT)
    await communicator.add_rpc_subscriber(lambda _c, _m: threading.Lock(), "lock")
    with pytest.raises(kiwipy.RemoteException, match="cannot encode"):
        await asyncio.wait_for(await communicator.rpc_send("lock", None), WAIT)


async def test_base_exception_in_subscriber_keeps_consuming(communicator) -> None:
    def subscriber(_c, task):
        if task == "exit":
            raise SystemExit(2)
        return task

    await communicator.add_task_subscriber(subscriber)
    with pytest.raises(kiwipy.RemoteException):
        await asyncio.wait_for(await communicator.task_send("exit"), WAIT)
    assert await asyncio.wait_for(await communicator.task_send("next"), WAIT) == "next"


async def test_new_task_queue_gets_safe_arguments(communicator, names, raw_channel) -> None:
    await communicator.task_send("declare it", no_reply=True)
    # Declaring with the same arguments succeeds; a differing one would close the channel.
    ok = await raw_channel.queue_declare(
        names.task_queue,
        durable=True,
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"{names.task_queue}.dead",
            "x-expires": defaults.TEST_QUEUE_EXPIRES,
        },
    )
    assert ok.message_count == 1


async def test_existing_kiwipy09_queue_is_used_as_is(rmq_uri, names, raw_channel) -> None:
    """A queue kiwipy 0.9 declared (7-day TTL) is used, never redeclared differently."""
    compat_args = {"x-message-ttl": defaults.TASK_MESSAGE_TTL, "x-expires": 10000}
    await raw_channel.queue_declare(names.task_queue, durable=True, arguments=compat_args)
    comm = await rmq.async_connect(rmq_uri, **names.options())
    try:
        await comm.add_task_subscriber(lambda _c, t: t * 2)
        assert await asyncio.wait_for(await comm.task_send(21), WAIT) == 42
        again = await raw_channel.queue_declare(
            names.task_queue, durable=True, arguments=compat_args
        )
        assert again.consumer_count == 1
    finally:
        await comm.disconnect()


@pytest.mark.parametrize("compat", [True, None], ids=["compat", "testing-mode-default"])
async def test_testing_mode_declares_what_kiwipy09_declares(
    rmq_uri, names, raw_channel, compat
) -> None:
    """kiwipy 0.9 in testing mode declares the task queue transient with a 7-day TTL and a
    10 s expiry, and the exchanges auto-deleting: a 0.9 peer redeclaring them must succeed
    (any difference closes its channel with PRECONDITION_FAILED)."""
    comm = await rmq.async_connect(rmq_uri, **names.options(task_queue_compat=compat))
    try:
        await comm.task_send("x", no_reply=True)
        await comm.broadcast_send("declares the message exchange")
        ok = await raw_channel.queue_declare(
            names.task_queue,
            durable=False,
            arguments={"x-message-ttl": defaults.TASK_MESSAGE_TTL, "x-expires": 10000},
        )
        assert ok.message_count == 1
        for exchange in (names.task_exchange, names.message_exchange):
            await raw_channel.exchange_declare(
                exchange, exchange_type="topic", durable=False, auto_delete=True
            )
    finally:
        await comm.disconnect()


async def test_compat_option_outside_testing_mode_is_durable(rmq_uri, names, raw_channel) -> None:
    options = names.options(task_queue_compat=True, testing_mode=False)
    comm = await rmq.async_connect(rmq_uri, **options)
    try:
        await comm.task_send("x", no_reply=True)
        ok = await raw_channel.queue_declare(
            names.task_queue,
            durable=True,
            arguments={"x-message-ttl": defaults.TASK_MESSAGE_TTL},
        )
        assert ok.message_count == 1
    finally:
        await comm.disconnect()
        await raw_channel.queue_delete(names.task_queue)
        await raw_channel.queue_delete(f"{names.task_queue}.dead")
        await raw_channel.exchange_delete(names.task_exchange)
        await raw_channel.exchange_delete(names.message_exchange)


async def test_standalone_publisher_raises_delivery_error(rmq_uri, names) -> None:
    """kiwipy 0.9's own test: ``aio_pika.exceptions.DeliveryError`` when nothing is bound."""
    connection = await aio_pika.connect_robust(url=rmq_uri)
    publisher = rmq.RmqTaskPublisher(
        connection,
        queue_name=names.task_queue,
        exchange_name=names.task_exchange,
        testing_mode=True,
    )
    await publisher.connect()
    try:
        with pytest.raises(aio_pika.exceptions.DeliveryError) as info:
            await publisher.task_send("The meaning?")
        assert isinstance(info.value, kiwipy.UnroutableError)
        queue, exchange = names.task_queue, names.task_exchange
        assert str(info.value) == f"no task queue bound for {queue!r} on exchange {exchange!r}"
        assert isinstance(info.value, aiormq.exceptions.DeliveryError)  # what aio-pika re-exports
    finally:
        await publisher.disconnect()
        await connection.close()


async def test_standalone_task_queue_pull_mode(rmq_uri, names) -> None:
    connection = await aio_pika.connect_robust(url=rmq_uri)
    queue = rmq.RmqTaskQueue(
        connection,
        queue_name=names.task_queue,
        exchange_name=names.task_exchange,
        testing_mode=True,
    )
    await queue.connect()
    try:
        result = await queue.task_send("Hello!")
        async with queue.next_task(timeout=1.0) as task:
            async with task.processing() as outcome:
                assert task.body == "Hello!" and task.state == "processing"
                outcome.set_result("Goodbye")
        assert task.state == "finished"
        assert await asyncio.wait_for(result, WAIT) == "Goodbye"
        with pytest.raises(kiwipy.QueueEmpty):
            async with queue.next_task(timeout=0.2):
                pass
    finally:
        await queue.disconnect()
        await connection.close()


async def test_pull_iteration_requeues_untouched(communicator, names) -> None:
    queue = await communicator.task_queue(f"{names.prefix}.iter")
    outcomes = [await queue.task_send(i) for i in range(6)]
    async for task in queue:
        if task.body < 3:
            task.process().set_result(task.body * 10)
    await asyncio.wait_for(asyncio.gather(*outcomes[:3]), WAIT)
    seen = []
    async for task in queue:
        seen.append(task.body)
        task.process().set_result(task.body * 10)
    assert sorted(seen) == [3, 4, 5]
    assert await asyncio.wait_for(asyncio.gather(*outcomes), WAIT) == [0, 10, 20, 30, 40, 50]


async def test_pull_forgotten_outcome_requeues(communicator, names) -> None:
    import gc

    queue = await communicator.task_queue(f"{names.prefix}.forget")
    result = await queue.task_send(1)
    async with queue.next_task() as task:
        outcome = task.process()
    with pytest.raises(kiwipy.QueueEmpty):
        async with queue.next_task(timeout=0.1):
            pass
    del outcome
    gc.collect()
    async with queue.next_task(timeout=WAIT) as task:
        task.process().set_result(10)
    assert await asyncio.wait_for(result, WAIT) == 10


async def test_pull_exception_in_processing(communicator, names) -> None:
    queue = await communicator.task_queue(f"{names.prefix}.exc")
    result = await queue.task_send("Do this")
    with pytest.raises(RuntimeError):
        async with queue.next_task() as task:
            async with task.processing():
                raise RuntimeError("Cannea do it captain!")
    with pytest.raises(kiwipy.RemoteException, match="Cannea"):
        await asyncio.wait_for(result, WAIT)
    with pytest.raises(kiwipy.InvalidStateError):
        task.process()
    with pytest.raises(asyncio.InvalidStateError):
        await task.requeue()


async def test_concurrent_future_result_from_asyncio_subscriber(communicator) -> None:
    done: concurrent.futures.Future[int] = concurrent.futures.Future()
    await communicator.add_task_subscriber(lambda _c, _t: done)
    nested = await asyncio.wait_for(await communicator.task_send(0), WAIT)
    done.set_result(5)
    assert await asyncio.wait_for(nested, WAIT) == 5


async def test_unacked_task_of_a_closed_worker_goes_to_another(communicator, rmq_uri, names):
    started = asyncio.Event()
    worker = await rmq.async_connect(rmq_uri, **names.options())

    async def slow(_c, task):
        started.set()
        await asyncio.sleep(30)

    await worker.add_task_subscriber(slow)
    future = await communicator.task_send("survivor")
    await asyncio.wait_for(started.wait(), WAIT)
    await worker.disconnect()
    await communicator.add_task_subscriber(lambda _c, task: f"{task} done")
    assert await asyncio.wait_for(future, WAIT) == "survivor done"


async def test_failed_task_is_logged_with_its_traceback(
    communicator, caplog: pytest.LogCaptureFixture
) -> None:
    def failing_subscriber(_c, task):
        raise ValueError(f"cannot do {task}")

    await communicator.add_task_subscriber(failing_subscriber)
    with caplog.at_level("WARNING", logger="kiwipy.rmq.tasks"):
        with pytest.raises(kiwipy.RemoteException, match="cannot do 3"):
            await asyncio.wait_for(await communicator.task_send(3), WAIT)
    record = next(r for r in caplog.records if r.getMessage().startswith("task raised"))
    assert record.exc_info is not None
    assert "in failing_subscriber" in caplog.text  # the traceback, not only ValueError(...)
