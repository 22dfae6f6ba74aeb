"""AiiDA's ZeroMQ broker (``aiida-zmq``): the task, RPC and broadcast cases it can take part in.

Every measurement starts its own broker service (``_zmq.ZmqService``) and ends it, and its
peers, by PID. The client is AiiDA's ``ZeromqCommunicator``; what it offers decides how each
case is read:

* ``task_send(body)`` without ``no_reply`` returns a future that the broker resolves once it
  has written the task to its queue directory (``no_reply=True`` has no acknowledgement at
  all), so "each call confirmed" is ``task_send(body).result()``, one after another.
* The broker does not forward a worker's result to the sender: that future always resolves
  with the broker's acceptance. ``task_roundtrip`` therefore times N accepted sends until the
  worker process reports (on its stdout) that it has handled the N-th task.
* ``broadcast_send`` is fire and forget (no acknowledgement); subscribers count arrivals.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

from . import _zmq
from ._support import RPC_ID, TASK_BODY, WARM_BODY, Context, Peer, finish_all, percentile
from .cases_fanout import _fanout_result
from .cases_rpc import _bursts, _latency, _throughput

Result = Dict[str, Any]
TIMEOUT = 120.0
# The worker's prefetch: AiiDA's default daemon.worker_process_slots. Unlimited (kiwipy's default,
# used by the other implementations) stalls at N = 2,000: the worker's non-blocking sends of
# acks and replies fail with zmq.Again (send high-water mark) while tasks keep arriving.
PREFETCH = 200


def _rate(ctx: Context, seconds: float, **details: Any) -> Result:
    return {"metrics": {ctx.case: ctx.n / seconds}, "details": {"seconds": seconds, **details}}


def _details() -> Dict[str, Any]:
    return {"broker": "aiida.brokers.zeromq.service", "endpoint": "ipc", **_zmq.versions()}


def task_send(ctx: Context) -> Result:
    with _zmq.ZmqService() as service:
        comm = _zmq.connect(service.endpoint)
        try:
            for _ in range(ctx.warmup):
                comm.task_send(TASK_BODY).result(TIMEOUT)
            samples: List[float] = []
            start = time.perf_counter()
            for _ in range(ctx.n):
                t = time.perf_counter()
                comm.task_send(TASK_BODY).result(TIMEOUT)
                samples.append(time.perf_counter() - t)
            seconds = time.perf_counter() - start
        finally:
            comm.close()
        p50 = 1000 * percentile(samples, 50)
        return _rate(ctx, seconds, p50_ms=p50, **_details())


def task_roundtrip(ctx: Context) -> Result:
    with _zmq.ZmqService() as service:
        total = ctx.warmup + ctx.n
        marks = f"{ctx.warmup},{total}"
        worker = Peer(
            "task-worker", "aiida-zmq", "-", "--endpoint", service.endpoint, "--marks", marks
        )
        try:
            worker.expect("ready")
            comm = _zmq.connect(service.endpoint)
            try:

                def batch(count: int) -> None:
                    for future in [comm.task_send(TASK_BODY) for _ in range(count)]:
                        future.result(TIMEOUT)

                batch(ctx.warmup)
                worker.expect("progress", TIMEOUT)
                start = time.perf_counter()
                batch(ctx.n)
                accepted = time.perf_counter() - start
                worker.expect("progress", TIMEOUT)
                seconds = time.perf_counter() - start
            finally:
                comm.close()
        finally:
            worker.finish()
        return _rate(ctx, seconds, accepted_s=accepted, prefetch=PREFETCH, **_details())


def _rpc_server(service: _zmq.ZmqService) -> Peer:
    server = Peer("rpc-server", "aiida-zmq", "-", "--endpoint", service.endpoint)
    server.expect("ready")
    return server


def rpc_latency(ctx: Context) -> Result:
    with _zmq.ZmqService() as service:
        server = _rpc_server(service)
        try:
            comm = _zmq.connect(service.endpoint)
            try:
                _zmq.await_rpc(comm, RPC_ID)
                samples: List[float] = []
                for i in range(ctx.warmup + ctx.n):
                    start = time.perf_counter()
                    comm.rpc_send(RPC_ID, TASK_BODY).result(TIMEOUT)
                    if i >= ctx.warmup:
                        samples.append(time.perf_counter() - start)
            finally:
                comm.close()
        finally:
            server.finish()
        result = _latency(samples)
        result["details"].update(_details())
        return result


def rpc_throughput(ctx: Context) -> Result:
    with _zmq.ZmqService() as service:
        server = _rpc_server(service)
        try:
            comm = _zmq.connect(service.endpoint)
            try:
                _zmq.await_rpc(comm, RPC_ID)

                def burst(count: int) -> None:
                    for future in [comm.rpc_send(RPC_ID, TASK_BODY) for _ in range(count)]:
                        future.result(TIMEOUT)

                burst(ctx.warmup)
                seconds = []
                for _ in range(_bursts(ctx)):
                    start = time.perf_counter()
                    burst(ctx.n)
                    seconds.append(time.perf_counter() - start)
            finally:
                comm.close()
        finally:
            server.finish()
        result = _throughput(ctx, seconds, "rpc_send")
        result["details"].update(_details())
        return result


def broadcast_fanout(ctx: Context) -> Result:
    with _zmq.ZmqService() as service:
        count = int(ctx.params.get("subscribers", 5))
        grace = "1" if ctx.quick else "3"
        args = ("aiida-zmq", "-", "--endpoint", service.endpoint, "--expect", str(ctx.n))
        peers = [Peer("broadcast-sub", *args, "--grace", grace) for _ in range(count)]
        try:
            idents = [peer.expect("ready") for peer in peers]
            comm = _zmq.connect(service.endpoint)
            try:
                for ident in idents:
                    _zmq.await_rpc(comm, ident)
                for _ in range(ctx.warmup):
                    comm.broadcast_send(WARM_BODY)
                t0 = time.time()
                for _ in range(ctx.n):
                    comm.broadcast_send(TASK_BODY)
                t_sent = time.time()
                result = _fanout_result(ctx, peers, t0, t_sent, False)
            finally:
                comm.close()
        finally:
            finish_all(peers)
        result["details"].update(_details())
        return result


RUNNERS: Dict[str, Dict[str, Callable[[Context], Result]]] = {
    "task_send": {"aiida-zmq": task_send},
    "task_roundtrip": {"aiida-zmq": task_roundtrip},
    "rpc_latency": {"aiida-zmq": rpc_latency},
    "rpc_throughput": {"aiida-zmq": rpc_throughput},
    "broadcast_fanout": {"aiida-zmq": broadcast_fanout},
}
