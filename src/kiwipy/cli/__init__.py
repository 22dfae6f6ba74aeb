"""The ``kiwipy`` command line (also ``python -m kiwipy``).

Subcommands: ``demo``, ``send``, ``rpc``, ``broadcast``, ``worker``, ``serve``, ``listen``,
``inspect``, ``dead`` and ``move``; ``kiwipy <command> --help`` describes each. The broker URL comes from ``--url``,
else the ``KIWIPY_URL`` environment variable, else the local RabbitMQ
(``amqp://guest:guest@127.0.0.1:5672/``); the demo defaults to a new SQLite file in a temporary
folder, with its workers as processes of their own.

Exit codes: 0 success, 1 a run-time failure (broker unreachable, no reply in time, the remote
side raised, unknown RPC recipient), 2 bad input (options, URL, body, callable), 130
interrupted. Errors are one line on stderr; set ``KIWIPY_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Callable

from .. import __version__, exceptions
from ._common import (
    DEFAULT_URL,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    connect_from_args,
    describe,
    err,
    format_value,
    mask_url,
    out,
    queue_name,
    read_body,
    wait_result,
)
from ._input import (
    DEFAULT_GRACE,
    OneLineParser,
    default_concurrency,
    max_concurrency,
    seconds,
    whole,
)

__all__ = ("build_parser", "main")

Command = Callable[[argparse.Namespace], int]

_BODY_HELP = (
    "the message body: JSON if it parses as JSON (42, '\"text\"', '{\"a\": 1}'), else a "
    "string; '-' reads it from stdin"
)


def _cmd_send(args: argparse.Namespace) -> int:
    """Send a task; with ``--wait`` wait for its result and print it."""
    body = read_body(args)
    queue = queue_name(args)
    with connect_from_args(args) as communicator:
        future = _guard_send(lambda: communicator.task_send(body, no_reply=not args.wait))
        if not args.wait:
            err(f"kiwipy send: task sent to queue {queue!r}")
            return EXIT_OK
        hint = f" (is a worker taking tasks from queue {queue!r}?)"
        out(format_value(wait_result(future, args.timeout, "result", hint)))
    return EXIT_OK


def _cmd_rpc(args: argparse.Namespace) -> int:
    """Call an RPC subscriber and print its reply."""
    body = read_body(args)
    with connect_from_args(args) as communicator:
        try:
            future = _guard_send(lambda: communicator.rpc_send(args.recipient, body))
        except exceptions.UnroutableError:
            raise CliError(
                f"nobody answers RPCs as {args.recipient!r} (UnroutableError); "
                "check the identifier and that the server runs on the same exchange"
            ) from None
        out(format_value(wait_result(future, args.timeout, "reply")))
    return EXIT_OK


def _cmd_broadcast(args: argparse.Namespace) -> int:
    """Send a broadcast with optional sender, subject and correlation id."""
    body = read_body(args, required=False)
    with connect_from_args(args) as communicator:
        _guard_send(
            lambda: communicator.broadcast_send(
                body, sender=args.sender, subject=args.subject, correlation_id=args.correlation_id
            )
        )
    err(f"kiwipy broadcast: sent (subject {args.subject!r}, sender {args.sender!r})")
    return EXIT_OK


def _guard_send(send: Callable[[], object]) -> object:
    """Run a send, turning encoding errors and call timeouts into one-line errors."""
    try:
        return send()
    except exceptions.EncodingError as exc:
        raise CliError(f"the body cannot be sent: {exc}", EXIT_USAGE) from None
    except exceptions.TimeoutError:
        raise CliError("the broker did not confirm the message in time") from None


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


# The parser


def _add_common_options(
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


def _exchanges(parser: argparse.ArgumentParser, queue: bool = True) -> None:
    parser.add_argument(
        "--message-exchange", metavar="NAME", help="exchange for RPCs and broadcasts"
    )
    parser.add_argument("--task-exchange", metavar="NAME", help="exchange for tasks")
    if queue:
        parser.add_argument("--queue", metavar="NAME", help="task queue (default: kiwipy.tasks)")


def _body(parser: argparse.ArgumentParser) -> None:
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


def _timeout(parser: argparse.ArgumentParser, default: float) -> None:
    parser.add_argument(
        "--timeout",
        type=seconds(allow_zero=False),
        default=default,
        metavar="SECONDS",
        help="how long to wait for the result (default: %(default)s)",
    )


def _long_running(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-messages",
        type=whole(1),
        metavar="N",
        help="stop by itself after handling N messages (default: run until Ctrl-C/SIGTERM)",
    )


def _worker_options(parser: argparse.ArgumentParser) -> None:
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
    _grace(parser, "task")


def _grace(parser: argparse.ArgumentParser, noun: str) -> None:
    back = "handed back to the queue" if noun == "task" else "abandoned"
    parser.add_argument(
        "--grace",
        type=seconds(allow_zero=True),
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help=f"on Ctrl-C/SIGTERM, how long a running {noun} may take to finish before it is "
        f"{back} (default: %(default)g)",
    )


def _handler_options(parser: argparse.ArgumentParser) -> None:
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
    _long_running(parser)


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
    _add_common_options(
        demo,
        default_url=DEMO_URL,
        default_help="a new SQLite file in a temporary folder, removed afterwards",
    )

    send = add(
        "send",
        _cmd_send,
        "send a task",
        "Send a task to a task queue; with --wait, wait for its result and print it as JSON.",
    )
    _body(send)
    send.add_argument("--wait", action="store_true", help="wait for the result and print it")
    _timeout(send, 60.0)
    _exchanges(send)
    _add_common_options(send)

    rpc = add(
        "rpc",
        _cmd_rpc,
        "call an RPC subscriber",
        "Call an RPC subscriber; print its reply as JSON.",
    )
    rpc.add_argument("recipient", help="the identifier the RPC subscriber listens on")
    _body(rpc)
    _timeout(rpc, 10.0)
    _exchanges(rpc, queue=False)
    _add_common_options(rpc)

    broadcast = add(
        "broadcast",
        _cmd_broadcast,
        "send a broadcast",
        "Send a broadcast to every listener (the body is optional and defaults to null).",
    )
    _body(broadcast)
    broadcast.add_argument("--sender", help="the broadcast's sender")
    broadcast.add_argument("--subject", help="the broadcast's subject")
    broadcast.add_argument("--correlation-id", help="the broadcast's correlation id")
    _exchanges(broadcast, queue=False)
    _add_common_options(broadcast)

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
    _worker_options(worker)
    _handler_options(worker)
    _exchanges(worker)
    _add_common_options(worker)

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
    _grace(serve, "call")
    _handler_options(serve)
    _exchanges(serve, queue=False)
    _add_common_options(serve)

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
    _long_running(listen)
    _exchanges(listen, queue=False)
    _add_common_options(listen)

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
    _exchanges(inspect, queue=False)
    _add_common_options(inspect)

    from ._dead import configure_parser as configure_dead

    dead = add(
        "dead",
        _cmd_dead,
        "list and requeue dead-lettered tasks",
        "Look at the tasks in a task queue's dead-letter queue (<queue>.dead) and send them "
        "back: 'kiwipy dead list', 'kiwipy dead requeue'.",
    )
    configure_dead(dead, _add_common_options)

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with *argv* (default ``sys.argv[1:]``). :returns: the exit code."""
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    label = f"kiwipy {args.command}"
    quiet = _quiet_library_logs()
    try:
        code: int = args.func(args)
        return code
    except CliError as exc:
        err(f"{label}: error: {exc}")
        return exc.code
    except KeyboardInterrupt:
        err(f"{label}: interrupted")
        return 130
    except Exception as exc:
        if os.environ.get("KIWIPY_DEBUG"):
            traceback.print_exc()
        err(f"{label}: error: {describe(exc)} (at {mask_url(args.url)}; KIWIPY_DEBUG=1 for more)")
        return EXIT_FAILURE
    finally:
        logging.getLogger().removeHandler(quiet)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """:returns: the parsed *argv*, with a body given after options between positionals
    (``kiwipy rpc NAME --timeout 5 BODY``), which argparse alone refuses."""
    args, extra = parser.parse_known_args(argv)
    if extra and len(extra) == 1 and getattr(args, "body", "") is None:
        if extra[0] == "-" or not extra[0].startswith("-"):
            args.body = extra[0]
            return args
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _quiet_library_logs() -> logging.Handler:
    """Keep library log records (aio-pika's connection errors, say) off the terminal: the
    command reports failures itself, in one line. ``KIWIPY_DEBUG=1`` shows them."""
    handler: logging.Handler = logging.NullHandler()
    if os.environ.get("KIWIPY_DEBUG"):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
