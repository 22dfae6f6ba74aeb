"""What OpenTelemetry tracing costs (issue 17): ``python -m benchmarks --tracing``.

The same workload, sequential task round trips (send, the subscriber answers, the reply
comes back) on an asyncio communicator, runs in a fresh process per measurement in three
modes, interleaved (off, api, sdk, off, api, sdk, ...) so the machine's drifts spread over
all of them:

* ``off``: ``opentelemetry`` hidden (``sys.modules['opentelemetry'] = None``), as without the
  ``kiwipy[otel]`` extra: every hook is one flag check;
* ``api``: the API importable, no SDK configured: no-op spans, context injected and read;
* ``sdk``: the SDK configured with a batch span processor whose exporter drops the spans, and
  a meter provider with an in-memory reader: real spans and metric updates on both sides.

Transports: ``memory`` (no I/O: the hooks' CPU cost is most visible) and ``rmq`` (the broker
at ``KIWIPY_BENCH_URL``, a process-local worker). It prints a table of medians and writes
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, List, Optional

from . import OTEL_ENV

MODES = ("off", "api", "sdk")
TRANSPORTS = ("memory", "rmq")


def _configure(mode: str) -> None:
    if mode == "off":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
        return
    if mode == "api":
        return
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


async def _round_trips(transport: str, n: int) -> float:
    import kiwipy
    from kiwipy import memory, rmq

    prefix = f"bench-tracing-{uuid.uuid4().hex[:8]}"
    if transport == "memory":
        comm: Any = await memory.async_connect(f"memory://{prefix}", encoder="json")
    else:
        url = os.environ.get("KIWIPY_BENCH_URL", "amqp://guest:guest@127.0.0.1:5672/")
        comm = await rmq.async_connect(
            url,
            message_exchange=f"{prefix}.messages",
            task_exchange=f"{prefix}.tasks",
            task_queue=f"{prefix}.tasks",
            testing_mode=True,
        )
    try:
        await comm.add_task_subscriber(lambda _c, task: task)
        for number in range(max(10, n // 20)):  # warm-up
            await (await comm.task_send(number))
        start = time.perf_counter()
        for number in range(n):
            await (await comm.task_send(number))
        elapsed = time.perf_counter() - start
    finally:
        await comm.disconnect()
    assert kiwipy is not None
    return n / elapsed


def child(mode: str, transport: str, n: int) -> None:
    _configure(mode)
    rate = asyncio.run(_round_trips(transport, n))
    from kiwipy import _tracing

    print(json.dumps({"mode": mode, "enabled": _tracing.ENABLED, "rate": rate}))


def _measure(mode: str, transport: str, n: int) -> Optional[float]:
    cmd = [sys.executable, "-m", "benchmarks.tracing", "--child", mode, transport, str(n)]
    env = {**os.environ, OTEL_ENV: "1"}  # each mode sets OpenTelemetry up itself
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0:
        print(f"{mode}/{transport} failed: {done.stderr[-500:]}", file=sys.stderr)
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["enabled"] == (mode != "off"), result
    return float(result["rate"])


def run(repeat: int, n_memory: int, n_rmq: int, transports: List[str]) -> Dict[str, Any]:
    """:returns: per transport and mode, the round trips per second of each repetition."""
    rates: Dict[str, Dict[str, List[float]]] = {t: {m: [] for m in MODES} for t in transports}
    for _ in range(repeat):
        for transport in transports:
            n = n_memory if transport == "memory" else n_rmq
            for mode in MODES:
                rate = _measure(mode, transport, n)
                if rate is not None:
                    rates[transport][mode].append(rate)
    return rates


def table(rates: Dict[str, Dict[str, List[float]]]) -> List[str]:
    lines = [f"{'transport':<10} {'mode':<5} {'round trips/s (median)':>22} {'vs off':>8}  runs"]
    for transport, by_mode in rates.items():
        off = statistics.median(by_mode["off"]) if by_mode["off"] else None
        for mode, values in by_mode.items():
            if not values:
                lines.append(f"{transport:<10} {mode:<5} {'failed':>22}")
                continue
            median = statistics.median(values)
            versus = f"{median / off:8.2f}" if off else f"{'-':>8}"
            runs = ", ".join(f"{v:.0f}" for v in values)
            lines.append(f"{transport:<10} {mode:<5} {median:22.0f} {versus}  {runs}")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--n-memory", type=int, default=5000, help="round trips on memory://")
    parser.add_argument("--n-rmq", type=int, default=1000, help="round trips on RabbitMQ")
    parser.add_argument("--transport", nargs="+", choices=TRANSPORTS, default=list(TRANSPORTS))
    parser.add_argument(
        "--child", nargs=3, metavar=("MODE", "TRANSPORT", "N"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    load = os.getloadavg()[0]
    rates = run(args.repeat, args.n_memory, args.n_rmq, args.transport)
    print(f"load average before: {load:.2f}, after: {os.getloadavg()[0]:.2f}")
    print("\n".join(table(rates)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
