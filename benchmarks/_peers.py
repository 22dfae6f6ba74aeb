"""Peer processes for the measurements: a task worker, an RPC server, a broadcast subscriber.

Usage: ``python -m benchmarks._peers ROLE VARIANT PREFIX [options]``. A peer speaks in lines:
it prints ``connected`` / ``ready`` / ``progress N`` / ``result {json}`` on stdout, reads
``go`` / ``sent`` on stdin, and stops when its stdin closes. Variants are ``thread`` and
``async`` (kiwipy's two communicators), ``aiida-zmq`` (AiiDA's ZeroMQ communicator, with
``--endpoint``; see ``_zmq``) and, for the RPC server, ``aio-pika``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from ._support import RPC_ID, WARM_BODY, Names, aio_connect, connect_async, connect_thread


def say(line: str) -> None:
    print(line, flush=True)


def _options(args: argparse.Namespace) -> Dict[str, Any]:
    return {"task_prefetch_count": args.prefetch} if args.prefetch else {}


# -- task worker ----------------------------------------------------------------------------


def _task_handler(args: argparse.Namespace) -> Any:
    count = [0]

    def handle(_comm: Any, task: Any) -> int:
        count[0] += 1
        if args.progress and count[0] % args.progress == 0:
            say(f"progress {count[0]}")
        return len(task)

    return handle


def _zmq_task_worker(args: argparse.Namespace) -> None:
    """Says ``progress K`` when it has handled K tasks, for each K in ``--marks``: AiiDA's
    ZeroMQ broker does not forward a worker's results to the sender, so it learns it here."""
    from . import _zmq

    marks = {int(m) for m in args.marks.split(",") if m}
    count = [0]

    def handle(_comm: Any, task: Any) -> int:
        count[0] += 1
        if count[0] in marks:
            say(f"progress {count[0]}")
        return len(task)

    comm = _zmq.connect(args.endpoint, args.prefetch or None)
    comm.add_task_subscriber(handle)
    say("ready")
    sys.stdin.read()
    comm.close()


def task_worker(args: argparse.Namespace, names: Names) -> None:
    if args.variant == "aiida-zmq":
        _zmq_task_worker(args)
        return
    if args.variant == "thread":
        comm = connect_thread(names, **_options(args))
        say("connected")
        if args.wait_go:
            sys.stdin.readline()
        comm.add_task_subscriber(_task_handler(args))
        say("ready")
        sys.stdin.read()
        comm.close()
        return

    async def main() -> None:
        comm = await connect_async(names, **_options(args))
        say("connected")
        if args.wait_go:
            await asyncio.to_thread(sys.stdin.readline)
        await comm.add_task_subscriber(_task_handler(args))
        say("ready")
        await asyncio.to_thread(sys.stdin.read)
        await comm.disconnect()

    asyncio.run(main())


# -- RPC server -----------------------------------------------------------------------------


def _rpc_handler(_comm: Any, msg: Any) -> int:
    return len(msg)


async def _raw_rpc_server(names: Names) -> None:
    """aio-pika by hand: ack the request, publish the reply (confirmed) to its reply_to."""
    import aio_pika

    connection = await aio_connect()
    channel = await connection.channel()
    queue = await channel.declare_queue(names.rpc_queue, exclusive=True)

    async def on_request(message: Any) -> None:
        await message.ack()
        reply = aio_pika.Message(
            str(len(message.body)).encode(), correlation_id=message.correlation_id
        )
        await channel.default_exchange.publish(reply, routing_key=message.reply_to)

    await queue.consume(on_request)
    say("ready")
    await asyncio.to_thread(sys.stdin.read)
    await connection.close()


def rpc_server(args: argparse.Namespace, names: Names) -> None:
    if args.variant == "aiida-zmq":
        from . import _zmq

        comm = _zmq.connect(args.endpoint)
        comm.add_rpc_subscriber(_rpc_handler, RPC_ID)
        say("ready")
        sys.stdin.read()
        comm.close()
    elif args.variant == "aio-pika":
        asyncio.run(_raw_rpc_server(names))
    elif args.variant == "thread":
        comm = connect_thread(names)
        comm.add_rpc_subscriber(_rpc_handler, RPC_ID)
        say("ready")
        sys.stdin.read()
        comm.close()
    else:

        async def main() -> None:
            comm = await connect_async(names)
            await comm.add_rpc_subscriber(_rpc_handler, RPC_ID)
            say("ready")
            await asyncio.to_thread(sys.stdin.read)
            await comm.disconnect()

        asyncio.run(main())


# -- broadcast subscriber -------------------------------------------------------------------


class Tally:
    """Counts timed broadcasts; knows when all arrived or when to stop waiting for them."""

    def __init__(self, expect: int, grace: float) -> None:
        self.expect, self.grace = expect, grace
        self.count = 0
        self.last = 0.0
        self.reached = threading.Event()
        self._sent_at: Optional[float] = None
        threading.Thread(target=self._read_stdin, daemon=True).start()

    def __call__(self, _comm: Any, body: Any, *_rest: Any) -> None:
        if body == WARM_BODY:
            return
        self.count += 1
        self.last = time.time()
        if self.count >= self.expect:
            self.reached.set()

    def _read_stdin(self) -> None:
        for line in sys.stdin:
            if line.strip() == "sent":
                self._sent_at = time.time()
        self._sent_at = self._sent_at or time.time()

    def wait(self) -> str:
        """Until all arrived, or the sender is done and nothing came for ``grace`` seconds."""
        started = time.time()
        while not self.reached.wait(0.05):
            now = time.time()
            if self._sent_at is not None and now - max(self._sent_at, self.last) > self.grace:
                break
            if now - started > 600:
                break
        return json.dumps({"count": self.count, "last": self.last})


def broadcast_sub(args: argparse.Namespace, names: Names) -> None:
    tally = Tally(args.expect, args.grace)
    if args.variant == "aiida-zmq":
        # The broker sends a broadcast only to clients it knows from a task or RPC
        # subscription (as AiiDA's daemon workers have): this one holds an RPC subscriber,
        # which the sender also calls to know the broker has registered it.
        import os

        from . import _zmq

        comm = _zmq.connect(args.endpoint)
        ident = f"sub-{os.getpid()}"
        comm.add_rpc_subscriber(_rpc_handler, ident)
        comm.add_broadcast_subscriber(tally)
        say(f"ready {ident}")
        say("result " + tally.wait())
        comm.close()
        return
    if args.variant == "thread":
        comm = connect_thread(names)
        comm.add_broadcast_subscriber(tally)
        say("ready")
        say("result " + tally.wait())
        comm.close()
        return

    async def main() -> None:
        comm = await connect_async(names)
        await comm.add_broadcast_subscriber(tally)
        say("ready")
        say("result " + await asyncio.to_thread(tally.wait))
        await comm.disconnect()

    asyncio.run(main())


ROLES = {"task-worker": task_worker, "rpc-server": rpc_server, "broadcast-sub": broadcast_sub}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._peers")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("variant", choices=["thread", "async", "aio-pika", "aiida-zmq"])
    parser.add_argument("prefix")
    parser.add_argument("--wait-go", action="store_true", help="wait for 'go' before consuming")
    parser.add_argument("--progress", type=int, default=0, help="report every N tasks")
    parser.add_argument("--prefetch", type=int, default=0, help="task_prefetch_count")
    parser.add_argument("--expect", type=int, default=0, help="broadcasts to wait for")
    parser.add_argument("--endpoint", default="", help="aiida-zmq: the broker's router socket")
    parser.add_argument("--marks", default="", help="aiida-zmq worker: counts to report")
    parser.add_argument("--grace", type=float, default=3.0, help="seconds to wait for stragglers")
    args = parser.parse_args(argv)
    ROLES[args.role](args, Names(args.prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
