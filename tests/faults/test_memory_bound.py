"""A worker's memory is bounded by its limits: one legal message cannot blow it up.

A worker process runs with a small ``max_decode_memory``; the test sends it the most costly
bodies there are for its encoder (``[[],[],...]``, where every three bytes, or one for
msgpack, become a Python list), one just within the budget and one four times over it, and
reads the worker's peak resident memory (``VmHWM``) from ``/proc``. The one within is
decoded and answered, the one over is refused before decoding (answered with
:class:`~kiwipy.DecodeBudgetExceeded` and parked), and the peak grows by less than the budget
plus a few copies of the largest body received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiormq
import pytest
from pamqp import commands as spec

from kiwipy import encoders

from ._scenario import SHARED_URL, Names

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)"
    ),
]

MiB = 1024 * 1024
BUDGET = 64 * MiB
MAX_SIZE = 8 * MiB
WAIT = 20.0
WORKER = Path(__file__).with_name("_memory_worker.py")


def costly_body(encoder: str, size: int) -> bytes:
    """:returns: a task message of about *size* bytes that costs the most to decode."""
    if encoder == "msgpack":
        count = size - 7
        return b"\x92\xdd" + count.to_bytes(4, "big") + b"\x90" * count + b"\xc2"
    count = (size - 12) // 3
    return b"[[" + b"[]," * (count - 1) + b"[]], false]"


def peak_rss(pid: int) -> int:
    """:returns: the peak resident memory of process *pid*, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _spawn(options: dict[str, Any]) -> subprocess.Popen[bytes]:
    config = {"url": SHARED_URL, "options": options}
    return subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    if process.stdout is not None:
        process.stdout.close()


@contextlib.asynccontextmanager
async def worker_process(options: dict[str, Any]) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A ``_memory_worker.py`` child with *options*, once it consumes; killed at exit."""
    process = _spawn(options)
    try:
        assert process.stdout is not None
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, process.stdout.readline), WAIT)
        assert line.strip() == b"ready", line
        yield process
    finally:
        _end(process)


async def _send(
    channel: Any, names: Names, reply_queue: str, tag: str, body: bytes, encoder: str
) -> Any:
    """Publish *body* as a task and :returns: the decoded reply to it."""
    await channel.basic_publish(
        body,
        exchange=names.task_exchange,
        routing_key=names.task_queue,
        properties=spec.Basic.Properties(correlation_id=tag, reply_to=reply_queue),
    )
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        got = await channel.basic_get(reply_queue, no_ack=True)
        if isinstance(got.delivery, spec.Basic.GetOk):
            assert got.header.properties.correlation_id == tag
            return encoders.get_encoder(encoder).decode(got.body)
        assert asyncio.get_running_loop().time() < deadline, f"no reply to {tag}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("encoder", ["yaml", "json", "msgpack"])
async def test_peak_memory_bounded_by_decode_budget(encoder: str) -> None:
    names = Names()
    factor = encoders.get_encoder(encoder).decode_factor
    options = names.options(encoder=encoder, max_decode_memory=BUDGET, max_message_size=MAX_SIZE)
    within = costly_body(encoder, BUDGET // factor - 16)
    over = costly_body(encoder, min(4 * BUDGET // factor, MAX_SIZE - 16))
    raw = await aiormq.connect(SHARED_URL)
    try:
        channel = await raw.channel()
        reply_queue = (await channel.queue_declare("", exclusive=True)).queue
        async with worker_process(options) as worker:
            await channel.queue_bind(reply_queue, names.task_exchange, reply_queue)
            warm = await _send(
                channel, names, reply_queue, "warm", costly_body(encoder, 1000), encoder
            )
            assert warm["result"] > 0
            before = peak_rss(worker.pid)
            reply = await _send(channel, names, reply_queue, "within", within, encoder)
            assert reply["result"] == (
                len(within) - 7 if encoder == "msgpack" else len(within) // 3 - 3
            )
            reply = await _send(channel, names, reply_queue, "over", over, encoder)
            assert "over max_decode_memory" in reply["exception"], reply
            assert f"{encoder} body" in reply["exception"]
            grown = peak_rss(worker.pid) - before
            bound = BUDGET + 4 * len(over) + 16 * MiB
            print(f"\n{encoder}: peak RSS {before / MiB:.0f} MiB -> +{grown / MiB:.0f} MiB")
            assert grown < bound, f"peak grew by {grown / MiB:.0f} MiB, bound {bound / MiB:.0f}"
            parked = await channel.basic_get(f"{names.task_queue}.dead", no_ack=True)
            assert parked.header.properties.headers["x-kiwipy-reason"] == "too-large"
            again = await _send(
                channel, names, reply_queue, "again", costly_body(encoder, 100), encoder
            )
            assert again["result"] > 0  # still serving
    finally:
        await raw.close()
