"""RPC: latency of sequential calls and throughput with many calls in flight.

The server is another process (``_peers rpc-server``) on the same interpreter. Each call
carries a 1 KiB body and gets a small reply. kiwipy waits for the request's publisher
confirm before returning the reply future, and so does the raw aio-pika client here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Callable, Dict, List

from ._support import (
    RAW_BODY,
    RPC_ID,
    TASK_BODY,
    Context,
    Names,
    Peer,
    aio_connect,
    batch_api,
    connect_async,
    connect_thread,
    in_loop,
    percentile,
)

Result = Dict[str, Any]
TIMEOUT = 120.0


def _server(ctx: Context) -> Peer:
    server = Peer("rpc-server", ctx.variant, ctx.names.prefix)
    server.expect("ready")
    return server


def _latency(samples: List[float]) -> Result:
    return {
        "metrics": {
            "rpc_p50": 1000 * percentile(samples, 50),
            "rpc_p99": 1000 * percentile(samples, 99),
        },
        "details": {"calls": len(samples), "mean_ms": 1000 * sum(samples) / len(samples)},
    }


def _throughput(ctx: Context, seconds: List[float], api: str = "") -> Result:
    """``bursts`` bursts of ``n`` calls in flight; the rate over all of them."""
    rate = ctx.n * len(seconds) / sum(seconds)
    return {"metrics": {ctx.case: rate}, "details": {"burst_s": seconds, "api": api}}


def _bursts(ctx: Context) -> int:
    return 1 if ctx.quick else int(ctx.params.get("bursts", 1))


# -- kiwipy ---------------------------------------------------------------------------------


def latency_thread(ctx: Context) -> Result:
    server = _server(ctx)
    comm = connect_thread(ctx.names)
    samples: List[float] = []
    try:
        for i in range(ctx.warmup + ctx.n):
            start = time.perf_counter()
            comm.rpc_send(RPC_ID, TASK_BODY).result(TIMEOUT)
            if i >= ctx.warmup:
                samples.append(time.perf_counter() - start)
    finally:
        comm.close()
        server.finish()
    return _latency(samples)


async def latency_async(ctx: Context) -> Result:
    server = _server(ctx)
    comm = await connect_async(ctx.names)
    samples: List[float] = []
    try:
        for i in range(ctx.warmup + ctx.n):
            start = time.perf_counter()
            future = await comm.rpc_send(RPC_ID, TASK_BODY)
            await asyncio.wait_for(future, TIMEOUT)
            if i >= ctx.warmup:
                samples.append(time.perf_counter() - start)
    finally:
        await comm.disconnect()
        server.finish()
    return _latency(samples)


def throughput_thread(ctx: Context) -> Result:
    """Each ``rpc_send`` returns once its request is confirmed, replies arrive meanwhile; or
    in ``rpc_throughput_many`` this library's ``rpc_send_many`` (all requests in flight)."""
    server = _server(ctx)
    comm = connect_thread(ctx.names)
    send_many = batch_api(ctx, comm, "rpc_send_many")

    def burst(count: int) -> None:
        if send_many is not None:
            futures = send_many([(RPC_ID, TASK_BODY)] * count)
        else:
            futures = [comm.rpc_send(RPC_ID, TASK_BODY) for _ in range(count)]
        for future in futures:
            future.result(TIMEOUT)

    try:
        burst(ctx.warmup)
        seconds = []
        for _ in range(_bursts(ctx)):
            start = time.perf_counter()
            burst(ctx.n)
            seconds.append(time.perf_counter() - start)
        return _throughput(ctx, seconds, "rpc_send_many" if send_many else "rpc_send")
    finally:
        comm.close()
        server.finish()


async def throughput_async(ctx: Context) -> Result:
    """All ``n`` calls are started at once with ``asyncio.gather``, or in
    ``rpc_throughput_many`` sent with this library's ``rpc_send_many``."""
    server = _server(ctx)
    comm = await connect_async(ctx.names)
    send_many = batch_api(ctx, comm, "rpc_send_many")

    async def burst(count: int) -> None:
        if send_many is not None:
            futures = await send_many([(RPC_ID, TASK_BODY)] * count)
        else:
            calls = (comm.rpc_send(RPC_ID, TASK_BODY) for _ in range(count))
            futures = await asyncio.gather(*calls)
        await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)

    try:
        await burst(ctx.warmup)
        seconds = []
        for _ in range(_bursts(ctx)):
            start = time.perf_counter()
            await burst(ctx.n)
            seconds.append(time.perf_counter() - start)
        return _throughput(ctx, seconds, "rpc_send_many" if send_many else "rpc_send")
    finally:
        await comm.disconnect()
        server.finish()


# -- raw aio-pika ---------------------------------------------------------------------------


class RawRpcClient:
    """The RPC pattern by hand: exclusive reply queue, correlation ids, confirmed requests."""

    def __init__(self, names: Names) -> None:
        self._names = names
        self._pending: Dict[str, asyncio.Future[bytes]] = {}
        self.connection: Any = None

    async def open(self) -> None:
        self.connection = await aio_connect()
        self._channel = await self.connection.channel()
        self._replies = await self._channel.declare_queue(exclusive=True)
        await self._replies.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def _on_reply(self, message: Any) -> None:
        future = self._pending.pop(message.correlation_id, None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def call(self, body: bytes) -> asyncio.Future[bytes]:
        import aio_pika

        corr = str(uuid.uuid4())
        future = asyncio.get_running_loop().create_future()
        self._pending[corr] = future
        message = aio_pika.Message(body, correlation_id=corr, reply_to=self._replies.name)
        await self._channel.default_exchange.publish(message, routing_key=self._names.rpc_queue)
        return future


async def latency_aio(ctx: Context) -> Result:
    server = _server(ctx)
    client = RawRpcClient(ctx.names)
    samples: List[float] = []
    try:
        await client.open()
        for i in range(ctx.warmup + ctx.n):
            start = time.perf_counter()
            await asyncio.wait_for(await client.call(RAW_BODY), TIMEOUT)
            if i >= ctx.warmup:
                samples.append(time.perf_counter() - start)
    finally:
        await client.close()
        server.finish()
    return _latency(samples)


async def throughput_aio(ctx: Context) -> Result:
    server = _server(ctx)
    client = RawRpcClient(ctx.names)

    async def burst(count: int) -> None:
        futures = await asyncio.gather(*(client.call(RAW_BODY) for _ in range(count)))
        await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)

    try:
        await client.open()
        await burst(ctx.warmup)
        seconds = []
        for _ in range(_bursts(ctx)):
            start = time.perf_counter()
            await burst(ctx.n)
            seconds.append(time.perf_counter() - start)
        return _throughput(ctx, seconds)
    finally:
        await client.close()
        server.finish()


RUNNERS: Dict[str, Dict[str, Callable[[Context], Result]]] = {
    "rpc_latency": {
        "thread": latency_thread,
        "async": in_loop(latency_async),
        "aio-pika": in_loop(latency_aio),
    },
    "rpc_throughput": {
        "thread": throughput_thread,
        "async": in_loop(throughput_async),
        "aio-pika": in_loop(throughput_aio),
    },
    "rpc_throughput_many": {
        "thread": throughput_thread,
        "async": in_loop(throughput_async),
        "aio-pika": in_loop(throughput_aio),
    },
}
