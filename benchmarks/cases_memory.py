"""A worker's memory over many tasks with replies, sampled from outside with psutil.

Two ways to feed the worker (``task_prefetch_count=100`` in both):

* ``backlog``: the queue already holds all N tasks (kiwipy's wire format), as after a
  restart with work waiting; a thread here drains the replies, as live senders would.
* ``live``: a kiwipy sender in this process sends the N tasks one after another (each
  confirmed) and collects the results, so the worker only ever sees what arrives.

The worker reports every N/10 tasks; RSS is read at each report and every 50 ms besides.
Growth is the RSS after the last task minus the RSS at the first report (10% of the tasks),
so start-up allocations do not count.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ._support import (
    TASK_BODY,
    Context,
    Names,
    Peer,
    aio_connect,
    connect_async,
    connect_thread,
    declare_task_queue,
    kiwi_task_bodies,
    prefill,
)

Result = Dict[str, Any]
TIMEOUT = 300.0
MIB = 1024.0 * 1024.0


def _prefill_for_worker(names: Names, total: int) -> None:
    """Tasks that want replies; the replies go to a queue of ours, bound like kiwipy's."""

    async def fill() -> None:
        connection = await aio_connect()
        try:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(names.task_exchange, "topic")
            # Deleted by the runner afterwards; x-expires is a backstop if that ever fails.
            expires = {"x-expires": 600000}
            replies = await channel.declare_queue(names.reply_queue, arguments=expires)
            await replies.bind(exchange, names.reply_queue)
            await declare_task_queue(names)
            bodies = kiwi_task_bodies(total, no_reply=False)
            await prefill(names.task_queue, bodies, reply_to=names.reply_queue)
        finally:
            await connection.close()

    asyncio.run(fill())


class ReplyDrain:
    """Consumes the replies in a thread, as live senders would (not timed)."""

    def __init__(self, names: Names) -> None:
        self.count = 0
        self._names = names
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        self._ready.wait(30)

    async def _main(self) -> None:
        connection = await aio_connect()
        try:
            channel = await connection.channel()
            queue = await channel.get_queue(self._names.reply_queue)
            await queue.consume(self._on_reply, no_ack=True)
            self._ready.set()
            await asyncio.to_thread(self._stop.wait)
        finally:
            await connection.close()

    async def _on_reply(self, _message: Any) -> None:
        self.count += 1

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(30)
        return self.count


class LiveSender:
    """Sends ``n`` tasks with replies from a thread and waits for every result."""

    def __init__(self, ctx: Context) -> None:
        self.error: Optional[BaseException] = None
        self._ctx = ctx
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self._ctx.variant == "thread":
                self._send_thread()
            else:
                asyncio.run(self._send_async())
        except BaseException as exc:
            self.error = exc

    def _send_thread(self) -> None:
        comm = connect_thread(self._ctx.names)
        try:
            futures = [comm.task_send(TASK_BODY) for _ in range(self._ctx.n)]
            for future in futures:
                future.result(TIMEOUT)
        finally:
            comm.close()

    async def _send_async(self) -> None:
        comm = await connect_async(self._ctx.names)
        try:
            futures = [await comm.task_send(TASK_BODY) for _ in range(self._ctx.n)]
            await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)
        finally:
            await comm.disconnect()

    def join(self) -> None:
        self._thread.join(TIMEOUT)
        if self.error is not None:
            raise self.error


class RssSampler:
    """Samples a process's resident set size every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self._interval = interval
        self.samples: List[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.now()
            self._stop.wait(self._interval)

    def now(self) -> int:
        try:
            rss = int(self._proc.memory_info().rss)
        except Exception:
            return self.samples[-1] if self.samples else 0
        self.samples.append(rss)
        return rss

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _start_worker(ctx: Context, every: int) -> Peer:
    args = ["--wait-go", "--progress", str(every), "--prefetch", "100"]
    return Peer("task-worker", ctx.variant, ctx.names.prefix, *args)


def worker_memory(ctx: Context) -> Result:
    live = ctx.params.get("mode") == "live"
    every = max(1, ctx.n // 10)
    if not live:
        _prefill_for_worker(ctx.names, ctx.n)
    worker = _start_worker(ctx, every)
    sampler: Optional[RssSampler] = None
    drain = None if live else ReplyDrain(ctx.names)
    marks: List[int] = []
    try:
        worker.expect("connected")
        sampler = RssSampler(worker.pid)
        baseline = sampler.now()
        worker.say("go")
        sender = LiveSender(ctx) if live else None
        for _ in range(ctx.n // every):
            worker.expect("progress", TIMEOUT)
            marks.append(sampler.now())
        if sender is not None:
            sender.join()
        time.sleep(0.2)
        final = sampler.now()
    finally:
        if sampler is not None:
            sampler.stop()
        worker.finish()
        replies = drain.stop() if drain is not None else None
    suffix = "_live" if live else ""
    return {
        "metrics": {
            f"worker_peak_rss{suffix}": max(sampler.samples) / MIB,
            f"worker_rss_growth{suffix}": (final - marks[0]) / MIB,
        },
        "details": {
            "mode": "live" if live else "backlog",
            "baseline_mib": baseline / MIB,
            "marks_mib": [m / MIB for m in marks],
            "every": every,
            "samples": len(sampler.samples),
            "prefetch": 100,
            "replies_drained": replies,
        },
    }


RUNNERS: Dict[str, Dict[str, Callable[[Context], Result]]] = {
    "worker_memory": {"thread": worker_memory, "async": worker_memory},
    "worker_memory_live": {"thread": worker_memory, "async": worker_memory},
}
