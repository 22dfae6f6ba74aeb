"""What the measurement processes share: names, bodies, connections, peers and probes.

This module is imported by measurement children (``_child``) and their peer processes
(``_peers``) under *either* interpreter: ours (``.venv``) or the kiwipy 0.9 one. It must
therefore import only the standard library at module level; msgpack, aio-pika and kiwipy
are imported where they are used, and pika only in the pika reference cases (the kiwipy 0.9
environment does not have it).

Everything a measurement declares on the broker is named from one prefix (``Names``), so the
runner can delete it afterwards even when the child crashed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional

URL = os.environ.get("KIWIPY_BENCH_URL", "amqp://guest:guest@127.0.0.1:5672/")
ROOT = Path(__file__).resolve().parent.parent

BODY_SIZE = 1024
# A str, not bytes, so that the YAML default encodes it as plainly as msgpack does.
TASK_BODY = "x" * BODY_SIZE
RAW_BODY = b"x" * BODY_SIZE
# kiwipy's durable task queue arguments (wire compatibility: a mismatch fails the declare).
TASK_QUEUE_ARGS: Dict[str, Any] = {"x-message-ttl": 604800000}
RPC_ID = "bench"
# Bodies of warm-up broadcasts, which subscribers do not count.
WARM_BODY = "warm"


class NotAvailable(Exception):
    """Raised when the implementation lacks the API a case measures (recorded as n/a)."""


@dataclass(frozen=True)
class Names:
    """Every broker name a measurement may use, derived from its unique prefix."""

    prefix: str

    @property
    def task_exchange(self) -> str:
        return f"{self.prefix}.tasks"

    @property
    def message_exchange(self) -> str:
        return f"{self.prefix}.messages"

    @property
    def task_queue(self) -> str:
        return f"{self.prefix}.queue"

    @property
    def rpc_queue(self) -> str:
        return f"{self.prefix}.rpc"

    @property
    def reply_queue(self) -> str:
        return f"{self.prefix}.reply"

    def queues(self) -> List[str]:
        """Every queue a measurement may leave, including our ``<queue>.dead`` companions."""
        queues = [self.task_queue, self.rpc_queue, self.reply_queue]
        return queues + [f"{q}.dead" for q in queues]

    def exchanges(self) -> List[str]:
        return [self.task_exchange, self.message_exchange]


@dataclass
class Context:
    """One measurement: which case, which variant, how many operations, which names."""

    case: str
    variant: str
    n: int
    names: Names
    quick: bool = False
    params: Dict[str, Any] = field(default_factory=dict)

    @property
    def warmup(self) -> int:
        """Untimed operations before the timed ones (connection set-up, JIT-ish caches)."""
        return max(10, min(100, self.n // 20))


def batch_api(ctx: Context, comm: Any, name: str) -> Optional[Callable[..., Any]]:
    """:returns: in a ``*_many`` case, the communicator's batch call *name* (this library's
    ``task_send_many``, ``rpc_send_many``, ``broadcast_send_many``) if it has one; else
    ``None``: the case sends one call at a time (kiwipy 0.9, which has no batch calls, and
    every plain case)."""
    return getattr(comm, name, None) if ctx.case.endswith("_many") else None


def in_loop(fn: Callable[[Context], Awaitable[Dict[str, Any]]]) -> Callable[[Context], Any]:
    """Turn an async case function into a plain one that runs it in a fresh event loop."""

    def runner(ctx: Context) -> Dict[str, Any]:
        async def main() -> Dict[str, Any]:
            return await fn(ctx)

        return asyncio.run(main())

    return runner


# -- kiwipy -------------------------------------------------------------------------------


def codec(name: str) -> Dict[str, Any]:
    """The encoder/decoder keyword arguments for ``name`` ('msgpack' or 'yaml' = the default)."""
    if name == "yaml":
        return {}
    import msgpack

    return {
        "encoder": functools.partial(msgpack.packb, use_bin_type=True),
        "decoder": functools.partial(msgpack.unpackb, raw=False),
    }


def kiwi_options(names: Names, codec_name: str = "msgpack", **extra: Any) -> Dict[str, Any]:
    # Never testing_mode: in kiwipy 0.9 it also turns on asyncio debug mode, which is slow.
    return {
        "connection_params": {"url": URL},
        "message_exchange": names.message_exchange,
        "task_exchange": names.task_exchange,
        "task_queue": names.task_queue,
        **codec(codec_name),
        **extra,
    }


# The sqlite:// transport: a measurement of ``kiwipy-sqlite-*`` sets this variable to its
# fresh file's URL (``_sqlite.SqliteFile``); its peers inherit it, so the same case code and
# the same peers connect to that file instead of RabbitMQ.
SQLITE_URL_ENV = "KIWIPY_BENCH_SQLITE_URL"


def sqlite_url() -> Optional[str]:
    """The SQLite file this process's communicators use, or None (RabbitMQ)."""
    return os.environ.get(SQLITE_URL_ENV) or None


def sqlite_options(names: Names, codec_name: str = "msgpack", **extra: Any) -> Dict[str, Any]:
    return {"task_queue": names.task_queue, **codec(codec_name), **extra}


def connect_thread(names: Names, codec_name: str = "msgpack", **extra: Any) -> Any:
    """A thread communicator, created the way aiida-core and plumpy create theirs (on the
    SQLite file of ``sqlite_url()`` when there is one)."""
    url = sqlite_url()
    if url is not None:
        from kiwipy import sqlite

        return sqlite.connect(url, **sqlite_options(names, codec_name, **extra))
    from kiwipy import rmq

    return rmq.RmqThreadCommunicator.connect(**kiwi_options(names, codec_name, **extra))


async def connect_async(names: Names, codec_name: str = "msgpack", **extra: Any) -> Any:
    url = sqlite_url()
    if url is not None:
        from kiwipy import sqlite

        return await sqlite.async_connect(url, **sqlite_options(names, codec_name, **extra))
    from kiwipy import rmq

    return await rmq.async_connect(**kiwi_options(names, codec_name, **extra))


def thread_loop(comm: Any) -> Optional[asyncio.AbstractEventLoop]:
    """The thread communicator's event loop, if it exposes one (kiwipy 0.9: ``loop()``)."""
    for attr in ("loop", "_loop"):
        value = getattr(comm, attr, None)
        if callable(value) and not isinstance(value, asyncio.AbstractEventLoop):
            try:
                value = value()
            except Exception:
                value = None
        if isinstance(value, asyncio.AbstractEventLoop):
            return value
    return None


def kiwipy_version() -> Dict[str, Any]:
    import kiwipy

    return {
        "version": getattr(kiwipy, "__version__", None),
        "file": getattr(kiwipy, "__file__", None),
    }


# -- raw aio-pika -------------------------------------------------------------------------


async def aio_connect() -> Any:
    import aio_pika

    return await aio_pika.connect(URL)


async def publish_pipelined(
    exchange: Any, make: Callable[[], Any], routing_key: str, n: int, window: int
) -> None:
    """Publish ``n`` messages with up to ``window`` unconfirmed at a time; every confirm awaited."""
    sent = 0
    while sent < n:
        batch = min(window, n - sent)
        await asyncio.gather(
            *(exchange.publish(make(), routing_key=routing_key) for _ in range(batch))
        )
        sent += batch


async def prefill(queue_name: str, bodies: List[bytes], **properties: Any) -> None:
    """Put persistent messages, each with its own correlation id, into the declared queue."""
    import aio_pika

    connection = await aio_connect()
    try:
        channel = await connection.channel()
        it = iter(bodies)

        def make() -> Any:
            return aio_pika.Message(
                next(it),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                correlation_id=str(uuid.uuid4()),
                **properties,
            )

        await publish_pipelined(channel.default_exchange, make, queue_name, len(bodies), 500)
    finally:
        await connection.close()


async def declare_task_queue(names: Names, kiwipy_args: bool = True) -> None:
    """Declare the durable task queue, with kiwipy's arguments unless it is for raw clients."""
    connection = await aio_connect()
    try:
        channel = await connection.channel()
        args = TASK_QUEUE_ARGS if kiwipy_args else None
        await channel.declare_queue(names.task_queue, durable=True, arguments=args)
    finally:
        await connection.close()


def kiwi_task_bodies(n: int, no_reply: bool, body: Any = TASK_BODY) -> List[bytes]:
    """Task messages as kiwipy puts them on the wire (msgpack): the tuple ``(task, no_reply)``."""
    import msgpack

    encoded = msgpack.packb((body, no_reply), use_bin_type=True)
    return [encoded] * n


# -- measurement helpers ------------------------------------------------------------------


def percentile(values: List[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


async def _watch_lag(stop: threading.Event, interval: float, out: List[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(interval)
        out.append(loop.time() - start - interval)


class LagProbe:
    """How long an event loop was blocked: the worst lateness of a short repeating timer.

    Works on a loop in another thread (the thread communicator's) or on the running loop.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._samples: List[float] = []
        self._future: Any = None

    def start_in(self, loop: asyncio.AbstractEventLoop) -> None:
        coro = _watch_lag(self._stop, self._interval, self._samples)
        self._future = asyncio.run_coroutine_threadsafe(coro, loop)
        time.sleep(5 * self._interval)

    def stop_in(self) -> float:
        self._stop.set()
        self._future.result(timeout=10)
        return self.max_ms()

    async def start(self) -> None:
        coro = _watch_lag(self._stop, self._interval, self._samples)
        self._future = asyncio.ensure_future(coro)
        await asyncio.sleep(5 * self._interval)

    async def stop(self) -> float:
        self._stop.set()
        await self._future
        return self.max_ms()

    def max_ms(self) -> float:
        return 1000.0 * max(self._samples, default=0.0)


class Peer:
    """A helper process (worker, server, subscriber) that talks in lines on stdin/stdout.

    It runs ``python -m benchmarks._peers ROLE ...`` with the same interpreter as this process,
    so a kiwipy 0.9 measurement gets kiwipy 0.9 peers. Its stderr goes to ours, prefixed.
    """

    def __init__(self, role: str, *args: str) -> None:
        cmd = [sys.executable, "-m", "benchmarks._peers", role, *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self._errors: List[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_errors, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _pump_errors(self) -> None:
        """Pass its stderr on to ours, keeping the last lines for error messages."""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            sys.stderr.write(f"[peer {self.pid}] {line}")
            self._errors = [*self._errors[-19:], line.rstrip("\n")]

    def _last_error(self) -> str:
        time.sleep(0.1)  # let the stderr pump catch up with the exit
        return self._errors[-1] if self._errors else "no stderr"

    def expect(self, word: str, timeout: float = 60.0) -> str:
        """Wait for the next line starting with ``word``; return the rest of it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"peer {self.pid}: no {word!r} within {timeout} s") from None
            if line is None:
                code = self.proc.wait()
                why = self._last_error()
                raise RuntimeError(f"peer exited ({code}) before {word!r}: {why}")
            if line.startswith(word):
                return line[len(word) :].strip()

    def say(self, line: str) -> None:
        """Send *line* to the peer; a peer that already finished (a broadcast subscriber
        that heard everything before the sender said ``sent``) no longer reads it."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it closed its stdin: nothing more to tell it

    def finish(self, timeout: float = 20.0) -> None:
        """Close its stdin (the signal to stop) and wait; kill it if it does not exit."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def finish_all(peers: List[Peer]) -> None:
    for peer in peers:
        try:
            peer.proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
    for peer in peers:
        peer.finish()
