"""The options several commands share, each group added to a command's parser by one
function: the broker (``--url``, ``--encoder``), exchanges and queue, the message body, the
timeout, and the options of the long-running commands (worker, serve, listen)."""

from __future__ import annotations

import argparse
import os

from ._common import DEFAULT_URL
from ._input import DEFAULT_GRACE, default_concurrency, max_concurrency, seconds, whole

__all__ = (
    "add_body",
    "add_common_options",
    "add_exchanges",
    "add_grace",
    "add_handler_options",
    "add_long_running",
    "add_timeout",
    "add_worker_options",
)

_BODY_HELP = (
    "the message body: JSON if it parses as JSON (42, '\"text\"', '{\"a\": 1}'), else a "
    "string; '-' reads it from stdin"
)


def add_common_options(
    parser: argparse.ArgumentParser, default_url: str | None = None, default_help: str = ""
) -> None:
    url = default_url or os.environ.get("KIWIPY_URL") or DEFAULT_URL
    default = default_help or f"$KIWIPY_URL, else {DEFAULT_URL}"
    parser.add_argument(
        "--url",
        default=url,
        help="broker URL: amqp://user:password@host:port/vhost, amqps://..., "
        "sqlite:///relative/path.db or sqlite:////absolute/path.db for a SQLite file shared by "
        f"the processes of one host, or memory://NAME for the in-process transport (default: "
        f"{default})",
    )
    parser.add_argument(
        "--encoder",
        choices=("yaml", "yaml-safe", "json", "msgpack"),
        default="yaml",
        help="wire encoding of messages; yaml is kiwipy 0.9's, yaml-safe the same decoded "
        "into plain data only (default: %(default)s)",
    )


def add_exchanges(parser: argparse.ArgumentParser, queue: bool = True) -> None:
    parser.add_argument(
        "--message-exchange", metavar="NAME", help="exchange for RPCs and broadcasts"
    )
    parser.add_argument("--task-exchange", metavar="NAME", help="exchange for tasks")
    if queue:
        parser.add_argument("--queue", metavar="NAME", help="task queue (default: kiwipy.tasks)")


def add_body(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("body", nargs="?", help=_BODY_HELP)
    parser.add_argument("--file", metavar="PATH", help="read the body from a file ('-': stdin)")
    parser.add_argument(
        "--as",
        dest="body_as",
        choices=("auto", "json", "string"),
        default="auto",
        help="how to read the body: auto (JSON if it parses, else a string), json (must be "
        "JSON), string (always a string) (default: %(default)s)",
    )


def add_timeout(parser: argparse.ArgumentParser, default: float) -> None:
    parser.add_argument(
        "--timeout",
        type=seconds(allow_zero=False),
        default=default,
        metavar="SECONDS",
        help="how long to wait for the result (default: %(default)s)",
    )


def add_long_running(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-messages",
        type=whole(1),
        metavar="N",
        help="stop by itself after handling N messages (default: run until Ctrl-C/SIGTERM)",
    )


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    cpus, most = default_concurrency(), max_concurrency()
    parser.add_argument(
        "--concurrency",
        type=whole(1, most),
        default=cpus,
        metavar="N",
        help=f"how many tasks run at once (default: %(default)s, the CPU count; at most {most}, "
        "the communicator's subscriber threads)",
    )
    parser.add_argument(
        "--prefetch",
        type=whole(0, 65535),
        metavar="N",
        help="at most N tasks in hand at once, running or waiting; the broker sends the rest "
        "to other workers (default: the concurrency; 0: no limit)",
    )
    add_grace(parser, "task")


def add_grace(parser: argparse.ArgumentParser, noun: str) -> None:
    back = "handed back to the queue" if noun == "task" else "abandoned"
    parser.add_argument(
        "--grace",
        type=seconds(allow_zero=True),
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help=f"on Ctrl-C/SIGTERM, how long a running {noun} may take to finish before it is "
        f"{back} (default: %(default)g)",
    )


def add_handler_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--with-communicator",
        action="store_true",
        help="call it as a kiwipy subscriber, function(communicator, message), instead of "
        "function(message)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print every message (a preview of its body, and its size)",
    )
    add_long_running(parser)
