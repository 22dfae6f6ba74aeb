"""``kiwipy inspect --watch``: the task queues live, refreshed every ``--interval`` seconds.

Each refresh takes a *sample* of every queue shown (the same ones ``kiwipy inspect`` shows:
``--queue`` names with their ``.dead`` queues, else every queue from the management API when
the broker has it, else the default task queue) and turns two successive samples into rates:

* over plain AMQP (passive declares, no management plugin) a queue tells only its depth
  (messages ready) and its consumers, so the rate is the *net* one, ``depth_rate`` (messages
  per second the queue grew, negative when it drains); ``rate_in`` and ``rate_out`` are
  ``null``;
* with the management API a queue also tells how many messages were ever published to it and
  delivered from it, so ``rate_in`` and ``rate_out`` are those counts' growth per second,
  and ``connections`` is the number of client connections to the broker (``null`` without).

A queue whose name ends in ``.dead`` is marked ``dead_letter`` (kiwipy parks tasks there).
One connection is opened for the whole watch and every check gets a channel of its own (a
passive declare of a missing queue closes its channel). Ctrl-C ends the watch with status 0;
``--count N`` ends it after N refreshes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import signal
import sys
import time
from typing import Any, Optional

from ._common import (
    CONNECT_TIMEOUT,
    EXIT_OK,
    CliError,
    format_value,
    mask_url,
    open_broker,
    out,
)
from ._management import ManagementUnavailable, count_connections, list_queues, management_url
from ._queues import DEAD_SUFFIX, queue_state, queues_to_inspect

__all__ = ("cmd_watch",)

#: Clears a terminal and puts the cursor top left (only written to a terminal).
_CLEAR = "\x1b[H\x1b[2J"


def cmd_watch(args: argparse.Namespace) -> int:
    """Run the watch (``inspect`` with ``--watch``); :returns: the exit status."""
    if args.interval <= 0:
        raise CliError("--interval must be a positive number of seconds")
    if args.count is not None and args.count < 1:
        raise CliError("--count must be at least 1")
    try:
        if args.url.startswith("memory://"):
            asyncio.run(_watch(args, _MemorySampler(args)))
        elif args.url.startswith("sqlite://"):
            _watch_sqlite(args)
        else:
            asyncio.run(_watch_amqp(args))
    except KeyboardInterrupt:  # Ctrl-C is how a live view ends
        pass
    return EXIT_OK


async def _watch_amqp(args: argparse.Namespace) -> None:
    try:
        import aio_pika
    except ImportError:
        raise CliError("inspect needs aio-pika: pip install 'kiwipy[rmq]'") from None
    connection = await open_broker(args.url, aio_pika.connect(args.url, timeout=CONNECT_TIMEOUT))
    try:
        await _watch(args, _AmqpSampler(args, connection))
    finally:
        await connection.close()


def _watch_sqlite(args: argparse.Namespace) -> None:
    from ._sqlite import SqliteSampler

    sampler = SqliteSampler(args)
    try:
        asyncio.run(_watch(args, _SqliteSamples(sampler)))
    finally:
        sampler.close()


class _SqliteSamples:
    """Every queue of a SQLite file (or the ``--queue`` ones), each with its dead letters."""

    def __init__(self, sampler: Any) -> None:
        self._sampler = sampler

    async def sample(self) -> dict[str, Any]:
        return _sample(self._sampler.queues(), None, None)


async def _watch(args: argparse.Namespace, sampler: Any) -> None:
    previous: Optional[dict[str, Any]] = None
    refreshes = 0
    stop = _ctrl_c()
    while not stop.is_set():
        started = time.monotonic()
        sample = await sampler.sample()
        view = _view(sample, previous)
        if args.json:
            out(format_value(view))
        else:
            _show(view, args)
        previous = sample
        refreshes += 1
        if args.count is not None and refreshes >= args.count:
            return
        pause = max(0.0, args.interval - (time.monotonic() - started))
        try:
            await asyncio.wait_for(stop.wait(), pause)
        except asyncio.TimeoutError:
            pass


def _ctrl_c() -> asyncio.Event:
    """:returns: an event set by the first Ctrl-C, which ends the watch after the refresh in
    progress. Not a cancellation: a cancel landing inside the AMQP client's channel handling
    can be swallowed there, and the watch would go on. A second Ctrl-C interrupts at once
    (KeyboardInterrupt), as does the first where the loop cannot handle signals."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def first() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # back to KeyboardInterrupt

    try:
        loop.add_signal_handler(signal.SIGINT, first)
    except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
        pass
    return stop


# Samples: {"at": monotonic seconds, "time": ISO text, "queues": [...], "connections": n}


class _AmqpSampler:
    def __init__(self, args: argparse.Namespace, connection: Any) -> None:
        self._args = args
        self._connection = connection
        self._base = args.management_url or management_url(args.url)
        self._management = not args.queue  # named queues: passive declares suffice
        self.note: Optional[str] = None

    async def sample(self) -> dict[str, Any]:
        queues: Optional[list[dict[str, Any]]] = None
        connections = None
        if self._management:
            try:
                queues = await asyncio.to_thread(list_queues, self._args.url, self._base)
                connections = await asyncio.to_thread(count_connections, self._args.url, self._base)
            except ManagementUnavailable as exc:
                self._management = False  # asked once: it will not appear meanwhile
                self.note = f"{exc}; showing the default task queue (name others with --queue)"
        if queues is None:
            names = queues_to_inspect(self._args)
            queues = [await queue_state(self._connection, name) for name in names]
        return _sample(queues, connections, self.note)


class _MemorySampler:
    """The in-process broker of this process (tests, notebooks calling ``kiwipy.cli.main``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from .. import memory
        from ._common import DEFAULT_QUEUE

        self._broker = memory.get_broker(memory.broker_name(args.url))
        self._names = args.queue or [DEFAULT_QUEUE]

    async def sample(self) -> dict[str, Any]:
        queues = []
        for name in self._names:
            ready, unsettled = self._broker.queue_stats(name)
            queues.append({"name": name, "exists": True, "messages": ready, "unacked": unsettled})
            dead = len(self._broker.dead_letters(name))
            queues.append({"name": name + DEAD_SUFFIX, "exists": True, "messages": dead})
        return _sample(queues, None, None)


def _sample(
    queues: list[dict[str, Any]], connections: Optional[int], note: Optional[str]
) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.timezone.utc)
    sample = {
        "at": time.monotonic(),
        "time": now.isoformat(timespec="milliseconds"),
        "queues": queues,
        "connections": connections,
    }
    if note:
        sample["note"] = note
    return sample


def _view(sample: dict[str, Any], previous: Optional[dict[str, Any]]) -> dict[str, Any]:
    """:returns: what one refresh shows: *sample* with the rates since *previous*."""
    before = {q["name"]: q for q in previous["queues"]} if previous else {}
    elapsed = sample["at"] - previous["at"] if previous else 0.0
    queues = []
    for queue in sample["queues"]:
        row = {key: value for key, value in queue.items() if key not in ("published", "delivered")}
        old = before.get(queue["name"])
        row["depth_rate"] = _rate(queue.get("messages"), old and old.get("messages"), elapsed)
        row["rate_in"] = _rate(queue.get("published"), old and old.get("published"), elapsed)
        row["rate_out"] = _rate(queue.get("delivered"), old and old.get("delivered"), elapsed)
        row["dead_letter"] = str(queue["name"]).endswith(DEAD_SUFFIX)
        queues.append(row)
    view = {"time": sample["time"], "queues": queues, "connections": sample["connections"]}
    if "note" in sample:
        view["note"] = sample["note"]
    return view


def _rate(now: Any, before: Any, elapsed: float) -> Optional[float]:
    if not isinstance(now, int) or not isinstance(before, int) or elapsed <= 0:
        return None  # unknown, or the first refresh
    return round((now - before) / elapsed, 2)


def _show(view: dict[str, Any], args: argparse.Namespace) -> None:
    lines = [f"kiwipy inspect --watch  {mask_url(args.url)}  {view['time']}  (Ctrl-C ends)"]
    if view.get("note"):
        lines.append(f"note: {view['note']}")
    if view["connections"] is not None:
        lines.append(f"connections: {view['connections']}")
    width = max(len("queue"), *(len(q["name"]) for q in view["queues"]))
    lines.append(
        f"{'queue':<{width}}  {'ready':>7}  {'consumers':>9}  {'net/s':>8}  {'in/s':>8}  "
        f"{'out/s':>8}"
    )
    for queue in view["queues"]:
        if not queue.get("exists", True):
            lines.append(f"{queue['name']:<{width}}  (does not exist)")
            continue
        cells = [queue.get("messages"), queue.get("consumers")]
        rates = [queue["depth_rate"], queue["rate_in"], queue["rate_out"]]
        lines.append(
            f"{queue['name']:<{width}}  {_cell(cells[0]):>7}  {_cell(cells[1]):>9}  "
            + "  ".join(f"{_cell(rate):>8}" for rate in rates)
        )
    if sys.stdout.isatty():
        sys.stdout.write(_CLEAR)
    for line in lines:
        out(line)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)
