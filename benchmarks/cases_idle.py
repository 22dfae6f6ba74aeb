"""An idle worker: how much CPU a worker process (and its client) burn while nothing happens.

A worker process subscribes to the task queue; the measuring process connects a client,
sends one task and waits for its result (everything connected and warmed up), lets both
settle for a second, then reads the worker's and its own CPU time (user + system, psutil)
before and after ``seconds`` of idleness. The metric is the percentage of one core: a
transport that polls shows up here, one that waits on sockets or doorbells stays near 0
(the kernel accounts CPU time in ticks of 10 ms, so 5 s resolve about 0.2 %).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable, Dict, Optional

from . import _zmq
from ._support import TASK_BODY, Context, Peer, connect_async, connect_thread, in_loop

Result = Dict[str, Any]
SETTLE = 1.0
TIMEOUT = 60.0


def _seconds(ctx: Context) -> float:
    return 1.0 if ctx.quick else float(ctx.params.get("seconds", 5.0))


class CpuWindow:
    """CPU seconds of some processes over one window of wall-clock time."""

    def __init__(self, **pids: int) -> None:
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._start: Dict[str, float] = {}
        self._t0 = 0.0

    def _cpu(self) -> Dict[str, float]:
        out = {}
        for name, proc in self._procs.items():
            times = proc.cpu_times()
            out[name] = times.user + times.system
        return out

    def start(self) -> None:
        self._start, self._t0 = self._cpu(), time.monotonic()

    def stop(self, ctx: Context, extra: Optional[Dict[str, Any]] = None) -> Result:
        end, wall = self._cpu(), time.monotonic() - self._t0
        percent = {name: 100.0 * (end[name] - self._start[name]) / wall for name in end}
        metrics = {"worker_idle_cpu": percent["worker"], "client_idle_cpu": percent["client"]}
        details = {"seconds": wall, "cpu_s": {n: end[n] - self._start[n] for n in end}}
        return {"metrics": metrics, "details": {**details, **(extra or {})}}


def _worker(ctx: Context, *args: str) -> Peer:
    worker = Peer("task-worker", *args)
    worker.expect("ready")
    return worker


def idle_thread(ctx: Context) -> Result:
    worker = _worker(ctx, ctx.variant, ctx.names.prefix)
    try:
        comm = connect_thread(ctx.names)
        try:
            comm.task_send(TASK_BODY).result(TIMEOUT)
            time.sleep(SETTLE)
            window = CpuWindow(worker=worker.pid, client=_self_pid())
            window.start()
            time.sleep(_seconds(ctx))
            return window.stop(ctx)
        finally:
            comm.close()
    finally:
        worker.finish()


async def idle_async(ctx: Context) -> Result:
    worker = await asyncio.to_thread(_worker, ctx, ctx.variant, ctx.names.prefix)
    try:
        comm = await connect_async(ctx.names)
        try:
            await asyncio.wait_for(await comm.task_send(TASK_BODY), TIMEOUT)
            await asyncio.sleep(SETTLE)
            window = CpuWindow(worker=worker.pid, client=_self_pid())
            window.start()
            await asyncio.sleep(_seconds(ctx))
            return window.stop(ctx)
        finally:
            await comm.disconnect()
    finally:
        worker.finish()


def idle_zmq(ctx: Context) -> Result:
    """The same with AiiDA's ZeroMQ broker; its service process's CPU is in the details."""
    with _zmq.ZmqService() as service:
        assert service.proc is not None
        worker = _worker(ctx, "aiida-zmq", "-", "--endpoint", service.endpoint, "--marks", "1")
        try:
            comm = _zmq.connect(service.endpoint)
            try:
                comm.task_send(TASK_BODY).result(TIMEOUT)
                worker.expect("progress", TIMEOUT)
                time.sleep(SETTLE)
                pids = {"worker": worker.pid, "client": _self_pid(), "broker": service.proc.pid}
                window = CpuWindow(**pids)
                window.start()
                time.sleep(_seconds(ctx))
                result = window.stop(ctx)
            finally:
                comm.close()
        finally:
            worker.finish()
    cpu = result["details"]["cpu_s"]
    result["details"]["broker_idle_cpu"] = 100.0 * cpu["broker"] / result["details"]["seconds"]
    return result


def _self_pid() -> int:
    return os.getpid()


RUNNERS: Dict[str, Dict[str, Callable[[Context], Result]]] = {
    "worker_idle_cpu": {
        "thread": idle_thread,
        "async": in_loop(idle_async),
        "aiida-zmq": idle_zmq,
    },
}
