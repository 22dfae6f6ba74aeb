"""Consuming tasks: draining a pre-filled queue of persistent messages.

The queue is filled before timing with persistent messages (kiwipy's wire format for the
kiwipy cases: the msgpack tuple ``(task, no_reply)``). A few extra messages are consumed
first and not timed, so the clock runs from the first timed ack to the last.

Every implementation's clock ticks at the same point: once a message's ``basic.ack`` has
been handed to the socket (issue 18). aio-pika and pika tick after their ack call returns.
The kiwipy communicators ack by themselves after the subscriber returns, so a probe wraps
the call that writes the ack: this library's ``kiwipy.rmq.receive._acks.ack`` (ticking when
its future resolves, i.e. when the writer drained it) and, for kiwipy 0.9, aiormq's
``Channel.basic_ack``, which aio-pika's ``message.ack()`` awaits. Both probes cost one Python
call per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any, Callable, Dict, Iterator

from ._support import (
    RAW_BODY,
    URL,
    Context,
    aio_connect,
    connect_async,
    connect_thread,
    declare_task_queue,
    in_loop,
    kiwi_task_bodies,
    prefill,
)

Result = Dict[str, Any]
TIMEOUT = 300.0


class Stopwatch:
    """Marks the time of the ``start``-th and the ``stop``-th call of ``tick``."""

    def __init__(self, start: int, stop: int) -> None:
        self.count = 0
        self._start, self._stop = start, stop
        self.t0 = self.t1 = 0.0
        self.done = threading.Event()

    def tick(self) -> None:
        self.count += 1
        if self.count == self._start:
            self.t0 = time.perf_counter()
        if self.count == self._stop:
            self.t1 = time.perf_counter()
            self.done.set()

    def result(self, ctx: Context) -> Result:
        if not self.done.is_set():
            raise TimeoutError(f"only {self.count} of {self._stop} messages consumed")
        seconds = self.t1 - self.t0
        return {"metrics": {ctx.case: ctx.n / seconds}, "details": {"seconds": seconds}}


@contextlib.contextmanager
def ack_probe(watch: Stopwatch) -> Iterator[None]:
    """Tick *watch* as each ack a kiwipy communicator writes is handed to the socket (module
    doc), for as long as the context lasts."""
    try:
        from kiwipy.rmq.receive import _acks  # this library
    except ImportError:  # kiwipy 0.9: aio-pika's message.ack() awaits aiormq's basic_ack
        import aiormq

        basic_ack = aiormq.Channel.basic_ack

        async def probed(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = await basic_ack(self, *args, **kwargs)
            watch.tick()
            return result

        aiormq.Channel.basic_ack = probed  # type: ignore[method-assign]
        try:
            yield
        finally:
            aiormq.Channel.basic_ack = basic_ack  # type: ignore[method-assign]
        return
    ack = _acks.ack

    def probed_ack(channel: Any, delivery_tag: int) -> Any:
        written = ack(channel, delivery_tag)
        written.add_done_callback(lambda _: watch.tick())
        return written

    _acks.ack = probed_ack  # type: ignore[assignment]
    try:
        yield
    finally:
        _acks.ack = ack  # type: ignore[assignment]


def _prefill_kiwi(ctx: Context, total: int) -> None:
    async def fill() -> None:
        await declare_task_queue(ctx.names)
        bodies = kiwi_task_bodies(total, no_reply=True)
        await prefill(ctx.names.task_queue, bodies, reply_to=ctx.names.reply_queue)

    asyncio.run(fill())


def consume_thread(ctx: Context) -> Result:
    total = ctx.warmup + ctx.n
    _prefill_kiwi(ctx, total)
    watch = Stopwatch(ctx.warmup, total)

    def subscriber(_comm: Any, _task: Any) -> None:
        pass

    with ack_probe(watch):
        comm = connect_thread(ctx.names)
        try:
            comm.add_task_subscriber(subscriber)
            watch.done.wait(TIMEOUT)
        finally:
            comm.close()
    return watch.result(ctx)


async def consume_async(ctx: Context) -> Result:
    total = ctx.warmup + ctx.n
    await asyncio.to_thread(_prefill_kiwi, ctx, total)
    watch = Stopwatch(ctx.warmup, total)

    def subscriber(_comm: Any, _task: Any) -> None:
        pass

    with ack_probe(watch):
        comm = await connect_async(ctx.names)
        try:
            await comm.add_task_subscriber(subscriber)
            await asyncio.to_thread(watch.done.wait, TIMEOUT)
        finally:
            await comm.disconnect()
    return watch.result(ctx)


def _prefill_raw(ctx: Context, total: int) -> None:
    async def fill() -> None:
        await declare_task_queue(ctx.names, kiwipy_args=False)
        await prefill(ctx.names.task_queue, [RAW_BODY] * total)

    asyncio.run(fill())


async def consume_aio(ctx: Context) -> Result:
    """aio-pika consumer, unlimited prefetch, ``await message.ack()`` per message."""
    total = ctx.warmup + ctx.n
    await asyncio.to_thread(_prefill_raw, ctx, total)
    watch = Stopwatch(ctx.warmup, total)

    async def on_message(message: Any) -> None:
        await message.ack()
        watch.tick()

    connection = await aio_connect()
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(ctx.names.task_queue, durable=True)
        await queue.consume(on_message)
        await asyncio.to_thread(watch.done.wait, TIMEOUT)
    finally:
        await connection.close()
    return watch.result(ctx)


def consume_pika(ctx: Context) -> Result:
    """pika BlockingConnection consumer, unlimited prefetch, ``basic_ack`` per message."""
    import pika

    total = ctx.warmup + ctx.n
    _prefill_raw(ctx, total)
    watch = Stopwatch(ctx.warmup, total)
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()

    def on_message(ch: Any, method: Any, _props: Any, _body: bytes) -> None:
        ch.basic_ack(delivery_tag=method.delivery_tag)
        watch.tick()
        if watch.done.is_set():
            ch.stop_consuming()

    try:
        channel.basic_consume(ctx.names.task_queue, on_message)
        connection.call_later(TIMEOUT, channel.stop_consuming)
        channel.start_consuming()
    finally:
        connection.close()
    return watch.result(ctx)


RUNNERS: Dict[str, Dict[str, Callable[[Context], Result]]] = {
    "task_consume": {
        "thread": consume_thread,
        "async": in_loop(consume_async),
        "aio-pika": in_loop(consume_aio),
        "pika": consume_pika,
    },
}
