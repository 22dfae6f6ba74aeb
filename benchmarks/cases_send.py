"""Sending tasks: each call confirmed, pipelined, the confirm round trip, and a 3 MB task.

Every publish here is persistent, mandatory and routed to a durable queue that has no
consumer, so the broker accepts (and writes) each message exactly as it would for a task.
kiwipy sends with ``no_reply=True`` (as upstream's own benchmark does), so no result futures
pile up; the message on the wire is the same either way.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Awaitable, Callable, Deque, Dict, List

from ._support import (
    RAW_BODY,
    TASK_BODY,
    TASK_QUEUE_ARGS,
    URL,
    Context,
    LagProbe,
    NotAvailable,
    aio_connect,
    connect_async,
    connect_thread,
    in_loop,
    percentile,
    publish_pipelined,
    thread_loop,
)

Result = Dict[str, Any]


def _rate(ctx: Context, seconds: float, **details: Any) -> Result:
    return {"metrics": {ctx.case: ctx.n / seconds}, "details": {"seconds": seconds, **details}}


# -- kiwipy: one confirmed call at a time ---------------------------------------------------


def send_thread(ctx: Context) -> Result:
    comm = connect_thread(ctx.names, ctx.params.get("codec", "msgpack"))
    try:
        for _ in range(ctx.warmup):
            comm.task_send(TASK_BODY, no_reply=True)
        start = time.perf_counter()
        for _ in range(ctx.n):
            comm.task_send(TASK_BODY, no_reply=True)
        return _rate(ctx, time.perf_counter() - start)
    finally:
        comm.close()


async def send_async(ctx: Context) -> Result:
    comm = await connect_async(ctx.names, ctx.params.get("codec", "msgpack"))
    try:
        for _ in range(ctx.warmup):
            await comm.task_send(TASK_BODY, no_reply=True)
        start = time.perf_counter()
        for _ in range(ctx.n):
            await comm.task_send(TASK_BODY, no_reply=True)
        return _rate(ctx, time.perf_counter() - start)
    finally:
        await comm.disconnect()


# -- an asyncio gather of one-at-a-time calls ------------------------------------------------


async def _gathered(ctx: Context, send: Callable[[], Awaitable[Any]]) -> Result:
    """``ctx.n`` calls of *send* started at once with ``asyncio.gather`` (the way asyncio code
    sends a batch without a batch API), after a warm-up gather of ``ctx.warmup``."""
    await asyncio.gather(*(send() for _ in range(ctx.warmup)))
    start = time.perf_counter()
    await asyncio.gather(*(send() for _ in range(ctx.n)))
    return _rate(ctx, time.perf_counter() - start, api="asyncio.gather")


async def send_gather_async(ctx: Context) -> Result:
    comm = await connect_async(ctx.names)
    try:
        return await _gathered(ctx, lambda: comm.task_send(TASK_BODY, no_reply=True))
    finally:
        await comm.disconnect()


async def send_gather_aio(ctx: Context) -> Result:
    """aio-pika: ``exchange.publish`` of every message at once, each confirm awaited."""
    connection, exchange = await _aio_exchange(ctx)
    key = ctx.names.task_queue
    try:
        return await _gathered(ctx, lambda: exchange.publish(_persistent(), routing_key=key))
    finally:
        await connection.close()


# -- kiwipy: the pipelined batch API, when the implementation has one -----------------------


def _send_many(comm: Any) -> Callable[..., Any]:
    send_many = getattr(comm, "task_send_many", None)
    if send_many is None:
        raise NotAvailable(f"{type(comm).__name__} has no task_send_many")
    return send_many  # type: ignore[no-any-return]


def send_many_thread(ctx: Context) -> Result:
    comm = connect_thread(ctx.names)
    try:
        send_many = _send_many(comm)
        send_many([TASK_BODY] * ctx.warmup, no_reply=True)
        start = time.perf_counter()
        send_many([TASK_BODY] * ctx.n, no_reply=True)
        return _rate(ctx, time.perf_counter() - start, api="task_send_many")
    finally:
        comm.close()


async def send_many_async(ctx: Context) -> Result:
    comm = await connect_async(ctx.names)
    try:
        send_many = _send_many(comm)
        await send_many([TASK_BODY] * ctx.warmup, no_reply=True)
        start = time.perf_counter()
        await send_many([TASK_BODY] * ctx.n, no_reply=True)
        return _rate(ctx, time.perf_counter() - start, api="task_send_many")
    finally:
        await comm.disconnect()


# -- references -----------------------------------------------------------------------------


def _pika_channel(ctx: Context, confirm: bool) -> Any:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    if confirm:
        channel.confirm_delivery()
    names = ctx.names
    channel.exchange_declare(names.task_exchange, "topic")
    channel.queue_declare(names.task_queue, durable=True, arguments=TASK_QUEUE_ARGS)
    channel.queue_bind(names.task_queue, names.task_exchange, routing_key=names.task_queue)
    return channel


def send_pika(ctx: Context) -> Result:
    """pika BlockingConnection; with confirms each publish waits for its Basic.Ack."""
    import pika

    confirm = ctx.variant == "pika-confirm"
    channel = _pika_channel(ctx, confirm)
    props = pika.BasicProperties(delivery_mode=2)
    names = ctx.names

    def publish() -> None:
        channel.basic_publish(names.task_exchange, names.task_queue, RAW_BODY, props, True)

    try:
        for _ in range(ctx.warmup):
            publish()
        start = time.perf_counter()
        for _ in range(ctx.n):
            publish()
        # Without confirms, one synchronous round trip shows the broker has read them all.
        channel.queue_declare(names.task_queue, passive=True)
        return _rate(ctx, time.perf_counter() - start)
    finally:
        channel.connection.close()


async def _aio_exchange(ctx: Context) -> Any:
    connection = await aio_connect()
    channel = await connection.channel()  # publisher confirms on: aio-pika's default
    exchange = await channel.declare_exchange(ctx.names.task_exchange, "topic")
    queue = await channel.declare_queue(
        ctx.names.task_queue, durable=True, arguments=TASK_QUEUE_ARGS
    )
    await queue.bind(exchange, ctx.names.task_queue)
    return connection, exchange


def _persistent(body: bytes = RAW_BODY) -> Any:
    import aio_pika

    return aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


async def send_aio(ctx: Context) -> Result:
    """aio-pika, ``await exchange.publish(...)`` one message at a time."""
    connection, exchange = await _aio_exchange(ctx)
    key = ctx.names.task_queue
    try:
        for _ in range(ctx.warmup):
            await exchange.publish(_persistent(), routing_key=key)
        start = time.perf_counter()
        for _ in range(ctx.n):
            await exchange.publish(_persistent(), routing_key=key)
        return _rate(ctx, time.perf_counter() - start)
    finally:
        await connection.close()


async def send_aio_pipelined(ctx: Context) -> Result:
    """aio-pika, windows of publishes in flight with ``asyncio.gather``; every confirm awaited."""
    window = int(ctx.params.get("window", 100))
    connection, exchange = await _aio_exchange(ctx)
    key = ctx.names.task_queue
    try:
        await publish_pipelined(exchange, _persistent, key, ctx.warmup, window)
        start = time.perf_counter()
        await publish_pipelined(exchange, _persistent, key, ctx.n, window)
        return _rate(ctx, time.perf_counter() - start, window=window)
    finally:
        await connection.close()


async def send_aio_windows(ctx: Context) -> Result:
    """aio-pika with this library's in-flight window: windows of ``WINDOW`` publishes, up to
    ``IN_FLIGHT`` of them unconfirmed at once (a new window starts as the oldest is confirmed,
    as ``task_send_many`` does); every confirm awaited."""
    from kiwipy.rmq.send._windows import IN_FLIGHT, WINDOW

    connection, exchange = await _aio_exchange(ctx)
    key = ctx.names.task_queue

    async def publish(n: int) -> None:
        in_flight: Deque[Awaitable[Any]] = collections.deque()
        for first in range(0, n, WINDOW):
            if len(in_flight) == IN_FLIGHT:
                await in_flight.popleft()
            count = min(WINDOW, n - first)
            messages = (exchange.publish(_persistent(), routing_key=key) for _ in range(count))
            in_flight.append(asyncio.gather(*messages))
        for window in in_flight:
            await window

    try:
        await publish(ctx.warmup)
        start = time.perf_counter()
        await publish(ctx.n)
        return _rate(ctx, time.perf_counter() - start, window=WINDOW, in_flight=IN_FLIGHT)
    finally:
        await connection.close()


async def confirm_rtt(ctx: Context) -> Result:
    """One publish, one confirm: persistent (written to disk) and transient, alternated."""
    import aio_pika

    connection, exchange = await _aio_exchange(ctx)
    key = ctx.names.task_queue
    transient = aio_pika.DeliveryMode.NOT_PERSISTENT
    samples: Dict[str, List[float]] = {"persistent": [], "transient": []}
    try:
        for i in range(ctx.warmup + ctx.n):
            for kind in ("persistent", "transient"):
                if kind == "persistent":
                    message = _persistent()
                else:
                    message = aio_pika.Message(RAW_BODY, delivery_mode=transient)
                start = time.perf_counter()
                await exchange.publish(message, routing_key=key)
                if i >= ctx.warmup:
                    samples[kind].append(time.perf_counter() - start)
    finally:
        await connection.close()
    return {
        "metrics": {f"confirm_rtt_{k}": 1000 * percentile(v, 50) for k, v in samples.items()},
        "details": {f"{k}_p99_ms": 1000 * percentile(v, 99) for k, v in samples.items()},
    }


# -- a 3 MB task ----------------------------------------------------------------------------


def large_body(ctx: Context) -> List[str]:
    """About 3 MB as 3,000 strings of 1,000 characters, so encoding is not a single memcpy."""
    return ["y" * 1000 for _ in range(int(ctx.params.get("items", 3000)))]


def _large_result(ctx: Context, times: List[float], lags: List[float], body: List[str]) -> Result:
    suffix = "_yaml" if ctx.params.get("codec") == "yaml" else ""
    metrics: Dict[str, Any] = {f"large_send{suffix}": percentile(times, 50)}
    metrics[f"large_loop_lag{suffix}"] = max(lags) if lags else None
    details = {"send_s": times, "lag_ms": lags, "chars": sum(map(len, body))}
    if not lags:
        details["lag"] = "n/a: the communicator's event loop is not reachable"
    return {"metrics": metrics, "details": details}


def large_thread(ctx: Context) -> Result:
    body = large_body(ctx)
    comm = connect_thread(ctx.names, ctx.params.get("codec", "msgpack"))
    times: List[float] = []
    lags: List[float] = []
    try:
        comm.task_send(TASK_BODY, no_reply=True)
        loop = thread_loop(comm)
        for _ in range(ctx.n):
            probe = LagProbe()
            if loop is not None:
                probe.start_in(loop)
            start = time.perf_counter()
            comm.task_send(body, no_reply=True)
            times.append(time.perf_counter() - start)
            if loop is not None:
                lags.append(probe.stop_in())
    finally:
        comm.close()
    return _large_result(ctx, times, lags, body)


async def large_async(ctx: Context) -> Result:
    body = large_body(ctx)
    comm = await connect_async(ctx.names, ctx.params.get("codec", "msgpack"))
    times: List[float] = []
    lags: List[float] = []
    try:
        await comm.task_send(TASK_BODY, no_reply=True)
        for _ in range(ctx.n):
            probe = LagProbe()
            await probe.start()
            start = time.perf_counter()
            await comm.task_send(body, no_reply=True)
            times.append(time.perf_counter() - start)
            lags.append(await probe.stop())
    finally:
        await comm.disconnect()
    return _large_result(ctx, times, lags, body)


RUNNERS: Dict[str, Dict[str, Callable[[Context], Result]]] = {
    "task_send": {
        "thread": send_thread,
        "async": in_loop(send_async),
        "pika": send_pika,
        "pika-confirm": send_pika,
        "aio-pika": in_loop(send_aio),
    },
    "task_send_yaml": {"thread": send_thread, "async": in_loop(send_async)},
    "task_send_gather": {"async": in_loop(send_gather_async), "aio-pika": in_loop(send_gather_aio)},
    "task_send_pipelined": {
        "thread": send_many_thread,
        "async": in_loop(send_many_async),
        "aio-pika-pipelined": in_loop(send_aio_pipelined),
        "aio-pika-windows": in_loop(send_aio_windows),
    },
    "confirm_rtt": {"aio-pika": in_loop(confirm_rtt)},
    "large_task": {"thread": large_thread, "async": in_loop(large_async)},
    "large_task_yaml": {"thread": large_thread, "async": in_loop(large_async)},
}
