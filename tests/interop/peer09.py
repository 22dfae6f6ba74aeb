"""A kiwipy 0.9 peer, run by the python of the kiwipy-0.9 venv (see ``scripts/kiwipy09-venv``).

Not importable from our package: it imports upstream ``kiwipy``. The parent test talks to it
through stdout, one JSON object per line (flushed)::

    {"event": "ready"}                         once connected (and subscribed, for servers)
    {"event": "task" | "rpc" | "broadcast", ...}  per message a server receives
    {"event": "result" | "error" | "sent", ...}   per message a client sends
    {"event": "closed"}                        after the communicator is closed

Servers (worker, rpc-server, listener) run until stdin closes or SIGTERM arrives.
Usage: peer09.py ROLE --url URL --exchange-prefix P [--queue Q] [--identifier ID]
[--count N] [--bodies JSON-LIST] [--encoder yaml|json|msgpack] [--timeout S] [--testing-mode]
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
import threading
from typing import Any, Callable

import kiwipy
from kiwipy.rmq import RmqThreadCommunicator

ECHO_BY = "kiwipy-0.9"
SERVERS = ("worker", "rpc-server", "listener")
CLIENTS = ("send-tasks", "rpc-client", "broadcaster")
_print_lock = threading.Lock()


class Terminate(Exception):
    """Raised in the main thread by SIGTERM, to leave the wait for stdin."""


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, **fields}, default=repr)
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def codec(name: str) -> dict[str, Callable[..., Any]]:
    """Encoder/decoder arguments for the communicator; yaml is 0.9's own default."""
    if name == "json":
        return {"encoder": lambda obj: json.dumps(obj).encode("utf-8"), "decoder": json.loads}
    if name == "msgpack":
        import msgpack

        return {"encoder": msgpack.packb, "decoder": functools.partial(msgpack.unpackb, raw=False)}
    return {}


def echo(kind: str, body: Any) -> dict[str, Any]:
    emit(kind, body=body)
    if body == "boom":
        raise ValueError("boom")
    return {"echo": body, "by": ECHO_BY}


def on_broadcast(_comm: Any, body: Any, sender: Any, subject: Any, correlation_id: Any) -> None:
    emit("broadcast", body=body, sender=sender, subject=subject, correlation_id=correlation_id)


def subscribe(comm: RmqThreadCommunicator, args: argparse.Namespace) -> None:
    if args.role == "worker":
        comm.add_task_subscriber(lambda _comm, task: echo("task", task))
    elif args.role == "rpc-server":
        comm.add_rpc_subscriber(lambda _comm, msg: echo("rpc", msg), args.identifier)
    else:
        comm.add_broadcast_subscriber(on_broadcast)


def outcome(event_fields: dict[str, Any], future: Any, timeout: float) -> None:
    """Emit the result of a task or RPC future, or the error it raised."""
    try:
        result = future.result(timeout=timeout)
        while isinstance(result, kiwipy.Future):  # 0.9 can nest futures
            result = result.result(timeout=timeout)
    except Exception as exc:
        emit("error", **event_fields, error_type=type(exc).__name__, error=str(exc))
    else:
        emit("result", **event_fields, result=result)


def send(comm: RmqThreadCommunicator, args: argparse.Namespace, body: Any) -> Any:
    if args.role == "send-tasks":
        return comm.task_send(body)
    return comm.rpc_send(args.identifier, body)


def run_client(comm: RmqThreadCommunicator, args: argparse.Namespace) -> None:
    bodies = json.loads(args.bodies) if args.bodies else list(range(args.count))
    if args.role == "broadcaster":
        for i, body in enumerate(bodies):
            acked = comm.broadcast_send(
                body, sender="peer09", subject=f"subject.{i}", correlation_id=i
            )
            emit("sent", index=i, body=body, acked=acked)
        return
    futures = []
    for i, body in enumerate(bodies):  # send all first, so a worker may process them together
        try:
            futures.append((i, body, send(comm, args, body)))
        except Exception as exc:  # e.g. UnroutableError: reported, not fatal
            emit("error", index=i, body=body, error_type=type(exc).__name__, error=str(exc))
    for i, body, future in futures:
        outcome({"index": i, "body": body}, future, args.timeout)


def wait_for_stop() -> None:
    def terminate(_signum: int, _frame: Any) -> None:
        raise Terminate

    signal.signal(signal.SIGTERM, terminate)
    try:
        sys.stdin.read()
    except Terminate:
        pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=SERVERS + CLIENTS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--exchange-prefix", required=True)
    parser.add_argument("--queue", help="task queue name (default: {prefix}.tasks)")
    parser.add_argument("--identifier", default="peer09", help="RPC identifier")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--bodies", help="a JSON list of message bodies, instead of --count")
    parser.add_argument("--encoder", choices=("yaml", "json", "msgpack"), default="yaml")
    parser.add_argument("--timeout", type=float, default=10.0, help="per result, in seconds")
    parser.add_argument("--testing-mode", action="store_true", help="0.9's testing_mode=True")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    prefix = args.exchange_prefix
    comm = RmqThreadCommunicator.connect(
        connection_params={"url": args.url},
        message_exchange=f"{prefix}.messages",
        task_exchange=f"{prefix}.tasks",
        task_queue=args.queue or f"{prefix}.tasks",
        testing_mode=args.testing_mode,
        **codec(args.encoder),
    )
    try:
        if args.role in SERVERS:
            subscribe(comm, args)
            emit("ready")
            wait_for_stop()
        else:
            emit("ready")
            run_client(comm, args)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        comm.close()
        emit("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
