"""Work that crosses processes: task round trips through a worker, and broadcast fan-out.

Peers run the same implementation and variant as the measuring process, on the same
interpreter. Broadcast subscribers time their last delivery with the wall clock
(``time.time()``), which all processes on this machine share.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable, Dict, List

from ._support import (
    TASK_BODY,
    WARM_BODY,
    Context,
    Peer,
    batch_api,
    connect_async,
    connect_thread,
    finish_all,
    in_loop,
)

Result = Dict[str, Any]
TIMEOUT = 300.0


def _worker(ctx: Context) -> Peer:
    worker = Peer("task-worker", ctx.variant, ctx.names.prefix)
    worker.expect("ready")
    return worker


def _rate(ctx: Context, seconds: float, api: str) -> Result:
    return {"metrics": {ctx.case: ctx.n / seconds}, "details": {"seconds": seconds, "api": api}}


def roundtrip_thread(ctx: Context) -> Result:
    """Send ``n`` tasks, then wait for all their results: one confirmed ``task_send`` after
    another, or in ``task_roundtrip_many`` this library's ``task_send_many``."""
    worker = _worker(ctx)
    comm = connect_thread(ctx.names)
    send_many = batch_api(ctx, comm, "task_send_many")

    def batch(count: int) -> None:
        if send_many is not None:
            futures = send_many([TASK_BODY] * count)
        else:
            futures = [comm.task_send(TASK_BODY) for _ in range(count)]
        for future in futures:
            future.result(TIMEOUT)

    try:
        batch(ctx.warmup)
        start = time.perf_counter()
        batch(ctx.n)
        return _rate(
            ctx, time.perf_counter() - start, "task_send_many" if send_many else "task_send"
        )
    finally:
        comm.close()
        worker.finish()


async def roundtrip_async(ctx: Context) -> Result:
    worker = _worker(ctx)
    comm = await connect_async(ctx.names)
    send_many = batch_api(ctx, comm, "task_send_many")

    async def batch(count: int) -> None:
        if send_many is not None:
            futures = await send_many([TASK_BODY] * count)
        else:
            futures = [await comm.task_send(TASK_BODY) for _ in range(count)]
        await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)

    try:
        await batch(ctx.warmup)
        start = time.perf_counter()
        await batch(ctx.n)
        return _rate(
            ctx, time.perf_counter() - start, "task_send_many" if send_many else "task_send"
        )
    finally:
        await comm.disconnect()
        worker.finish()


# -- broadcast fan-out ----------------------------------------------------------------------


def _subscribers(ctx: Context) -> List[Peer]:
    count = int(ctx.params.get("subscribers", 5))
    grace = "1" if ctx.quick else "3"
    args = (ctx.variant, ctx.names.prefix, "--expect", str(ctx.n), "--grace", grace)
    peers = [Peer("broadcast-sub", *args) for _ in range(count)]
    try:
        for peer in peers:
            peer.expect("ready")
    except BaseException:
        finish_all(peers)
        raise
    return peers


def _fanout_result(ctx: Context, peers: List[Peer], t0: float, t_sent: float, many: bool) -> Result:
    for peer in peers:
        peer.say("sent")
    reports = [json.loads(peer.expect("result", TIMEOUT)) for peer in peers]
    received = sum(r["count"] for r in reports)
    last = max((r["last"] for r in reports if r["count"]), default=t_sent)
    expected = ctx.n * len(peers)
    suffix = ctx.case[len("broadcast_fanout") :]  # "" or "_many"
    return {
        "metrics": {
            f"broadcast_fanout{suffix}": received / (last - t0),
            f"broadcast_lost{suffix}": expected - received,
        },
        "details": {
            "subscribers": len(peers),
            "expected": expected,
            "received": [r["count"] for r in reports],
            "send_rate": ctx.n / (t_sent - t0),
            "seconds": last - t0,
            "api": "broadcast_send_many" if many else "broadcast_send",
        },
    }


def fanout_thread(ctx: Context) -> Result:
    """``n`` broadcasts, one confirmed ``broadcast_send`` after another, or in
    ``broadcast_fanout_many`` this library's ``broadcast_send_many``."""
    peers = _subscribers(ctx)
    try:
        comm = connect_thread(ctx.names)
        send_many = batch_api(ctx, comm, "broadcast_send_many")
        try:
            for _ in range(ctx.warmup):
                comm.broadcast_send(WARM_BODY)
            t0 = time.time()
            if send_many is not None:
                send_many([(TASK_BODY,)] * ctx.n)
            else:
                for _ in range(ctx.n):
                    comm.broadcast_send(TASK_BODY)
            t_sent = time.time()
            return _fanout_result(ctx, peers, t0, t_sent, send_many is not None)
        finally:
            comm.close()
    finally:
        finish_all(peers)


async def fanout_async(ctx: Context) -> Result:
    peers = _subscribers(ctx)
    try:
        comm = await connect_async(ctx.names)
        send_many = batch_api(ctx, comm, "broadcast_send_many")
        try:
            for _ in range(ctx.warmup):
                await comm.broadcast_send(WARM_BODY)
            t0 = time.time()
            if send_many is not None:
                await send_many([(TASK_BODY,)] * ctx.n)
            else:
                for _ in range(ctx.n):
                    await comm.broadcast_send(TASK_BODY)
            t_sent = time.time()
            many = send_many is not None
            return await asyncio.to_thread(_fanout_result, ctx, peers, t0, t_sent, many)
        finally:
            await comm.disconnect()
    finally:
        finish_all(peers)


RUNNERS: Dict[str, Dict[str, Callable[[Context], Result]]] = {
    "task_roundtrip": {"thread": roundtrip_thread, "async": in_loop(roundtrip_async)},
    "task_roundtrip_many": {"thread": roundtrip_thread, "async": in_loop(roundtrip_async)},
    "broadcast_fanout": {"thread": fanout_thread, "async": in_loop(fanout_async)},
    "broadcast_fanout_many": {"thread": fanout_thread, "async": in_loop(fanout_async)},
}
