"""The ``kiwipy`` argument parser: one subcommand per command, each with its options and the
function that runs it. The commands beyond sending (demo, worker, serve, listen, inspect,
dead, move) are imported only when run."""

from __future__ import annotations

import argparse
import os
from typing import Callable

from .. import __version__
from ._common import DEFAULT_URL
from ._input import OneLineParser
from ._options import (
    add_body,
    add_common_options,
    add_exchanges,
    add_grace,
    add_handler_options,
    add_long_running,
    add_timeout,
    add_worker_options,
)
from ._send import cmd_broadcast, cmd_rpc, cmd_send

__all__ = ("DEMO_URL", "build_parser")

Command = Callable[[argparse.Namespace], int]


#: The demo's default URL (a new SQLite file in a temporary folder; see ``_demo.py``).
DEMO_URL = "sqlite://"


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(args)


def _cmd_worker(args: argparse.Namespace) -> int:
    from ._serve import cmd_worker as run

    return run(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from ._serve import cmd_serve as run

    return run(args)


def _cmd_listen(args: argparse.Namespace) -> int:
    from ._serve import cmd_listen as run

    return run(args)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ._inspect import cmd_inspect as run

    return run(args)


def _cmd_dead(args: argparse.Namespace) -> int:
    from ._dead import cmd_dead as run

    return run(args)


def _cmd_move(args: argparse.Namespace) -> int:
    from ._move import cmd_move as run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="kiwipy",
        description="Send and receive kiwipy tasks, RPCs and broadcasts, and look at the broker.",
        epilog="Exit codes: 0 ok, 1 failure, 2 bad input, 130 interrupted. "
        "Set KIWIPY_DEBUG=1 to see tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Command, summary: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=description)
        sub.set_defaults(func=func)
        return sub

    demo = add(
        "demo",
        _cmd_demo,
        "a narrated tour of tasks, RPC and broadcasts",
        "Start three worker processes and a client and show tasks, RPCs and broadcasts at "
        "work. Runs over a new SQLite file in a temporary folder (no broker; the folder is "
        "removed at the end) unless given --url amqp://... (RabbitMQ), --url sqlite:///FILE.db "
        "(that file, kept) or --url memory:// (in-process, the workers on threads).",
    )
    add_common_options(
        demo,
        default_url=DEMO_URL,
        default_help="a new SQLite file in a temporary folder, removed afterwards",
    )

    send = add(
        "send",
        cmd_send,
        "send a task",
        "Send a task to a task queue; with --wait, wait for its result and print it as JSON.",
    )
    add_body(send)
    send.add_argument("--wait", action="store_true", help="wait for the result and print it")
    add_timeout(send, 60.0)
    add_exchanges(send)
    add_common_options(send)

    rpc = add(
        "rpc",
        cmd_rpc,
        "call an RPC subscriber",
        "Call an RPC subscriber; print its reply as JSON.",
    )
    rpc.add_argument("recipient", help="the identifier the RPC subscriber listens on")
    add_body(rpc)
    add_timeout(rpc, 10.0)
    add_exchanges(rpc, queue=False)
    add_common_options(rpc)

    broadcast = add(
        "broadcast",
        cmd_broadcast,
        "send a broadcast",
        "Send a broadcast to every listener (the body is optional and defaults to null).",
    )
    add_body(broadcast)
    broadcast.add_argument("--sender", help="the broadcast's sender")
    broadcast.add_argument("--subject", help="the broadcast's subject")
    broadcast.add_argument("--correlation-id", help="the broadcast's correlation id")
    add_exchanges(broadcast, queue=False)
    add_common_options(broadcast)

    worker = add(
        "worker",
        _cmd_worker,
        "run tasks with a Python function",
        "Take tasks from a queue and run each with a Python callable; its return value (or "
        "exception, with its traceback) goes back to the sender. Ctrl-C or SIGTERM drains it: "
        "no new tasks, the running ones get --grace seconds to finish, the rest go back to "
        "the queue; a second signal stops it at once.",
    )
    worker.add_argument(
        "callable", help="module:function, package.module:Class.method or file.py:function"
    )
    add_worker_options(worker)
    add_handler_options(worker)
    add_exchanges(worker)
    add_common_options(worker)

    serve = add(
        "serve",
        _cmd_serve,
        "answer RPCs with a Python function",
        "Answer RPCs sent to IDENTIFIER with a Python callable. Ctrl-C or SIGTERM drains it: "
        "no new calls, the running one gets --grace seconds to finish and reply; a second "
        "signal stops it at once.",
    )
    serve.add_argument("identifier", help="the identifier to answer RPCs as")
    serve.add_argument("callable", help="module:function, or file.py:function")
    add_grace(serve, "call")
    add_handler_options(serve)
    add_exchanges(serve, queue=False)
    add_common_options(serve)

    listen = add(
        "listen",
        _cmd_listen,
        "print broadcasts as they arrive",
        "Print broadcasts as they arrive. --subject and --sender take wildcard patterns "
        "('*' matches anything, matched from the start: 'job.*' matches 'job.1.done'); "
        "repeat one to accept any of several.",
    )
    listen.add_argument("--subject", action="append", metavar="PATTERN", help="subject filter")
    listen.add_argument("--sender", action="append", metavar="PATTERN", help="sender filter")
    listen.add_argument("--json", action="store_true", help="print one JSON object per line")
    add_long_running(listen)
    add_exchanges(listen, queue=False)
    add_common_options(listen)

    inspect = add(
        "inspect",
        _cmd_inspect,
        "show the broker and the task queues",
        "Show the broker's product and version, whether the exchanges exist, and the queues "
        "with their messages ready and consumers. Without --queue it lists every queue of the "
        "vhost through the RabbitMQ management HTTP API when the broker has it enabled, else "
        "(saying so) only the default task queue: AMQP cannot list queues. On a sqlite:// file "
        "it shows every queue (ready, unsettled, consumers, dead letters) and the processes "
        "on the file (live ones, and dead ones not yet released). Reads only.",
    )
    inspect.add_argument(
        "--queue",
        action="append",
        metavar="NAME",
        help="a task queue to show, with its .dead queue (repeatable; default: every queue, "
        "see above)",
    )
    inspect.add_argument(
        "--management-url",
        metavar="URL",
        help="the management API's base URL (default: http://<the --url host>:15672/; "
        "https for amqps), used with the --url user and password",
    )
    inspect.add_argument(
        "--json", action="store_true", help="machine-readable output (one line per refresh)"
    )
    inspect.add_argument(
        "--watch",
        action="store_true",
        help="a live view: refresh every --interval seconds with each queue's depth, "
        "consumers and rates, until Ctrl-C",
    )
    inspect.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between refreshes of --watch (default: %(default)s)",
    )
    inspect.add_argument(
        "--count", type=int, metavar="N", help="with --watch, stop after N refreshes"
    )
    add_exchanges(inspect, queue=False)
    add_common_options(inspect)

    from ._dead import configure_parser as configure_dead

    dead = add(
        "dead",
        _cmd_dead,
        "list and requeue dead-lettered tasks",
        "Look at the tasks in a task queue's dead-letter queue (<queue>.dead) and send them "
        "back: 'kiwipy dead list', 'kiwipy dead requeue'.",
    )
    configure_dead(dead, add_common_options)

    from ._move import REPLIES_NOTE
    from ._move import configure_parser as configure_move

    move = add(
        "move",
        _cmd_move,
        "move the waiting tasks of a SQLite file to RabbitMQ",
        "Send every task waiting in a SQLite file (or in its --queue queues) to RabbitMQ's "
        "task queue of the same name, each confirmed by RabbitMQ before it is deleted from "
        "the file; a task that cannot be sent stays in the file. Stop the file's workers "
        f"first: a task one takes meanwhile may run twice. Note: {REPLIES_NOTE}.",
    )
    configure_move(move, os.environ.get("KIWIPY_URL") or DEFAULT_URL)
    return parser
