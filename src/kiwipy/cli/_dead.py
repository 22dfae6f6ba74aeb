"""``kiwipy dead list | requeue | park``: the tasks in a task queue's ``<queue>.dead``.

This module holds the command's parser and picks the transport: on a ``sqlite://`` file the
command is :mod:`._sqlite`'s; on RabbitMQ ``list`` is :mod:`._dead_list`'s and ``requeue`` and
``park`` are :mod:`._dead_move`'s, all reading the queue without losing anything
(:mod:`._dead_taken`). What a dead message says, and the headers a moved one gets, are
:mod:`._dead_headers`'.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Callable, Optional

from ._common import DEFAULT_QUEUE, EXIT_USAGE, CliError, check_url, is_sqlite
from ._input import whole

__all__ = ("cmd_dead", "configure_parser")


def cmd_dead(args: argparse.Namespace) -> int:
    check_url(args.url)
    if args.url.startswith("memory://"):
        raise CliError(
            "dead-letter queues are kept by RabbitMQ or a SQLite file; give an amqp:// or "
            "sqlite:// URL",
            EXIT_USAGE,
        )
    if is_sqlite(args.url):
        from ._sqlite import cmd_dead_sqlite

        return cmd_dead_sqlite(args)
    if getattr(args, "ids", None):
        raise CliError(
            "--id picks a dead letter of a sqlite:// file; on RabbitMQ use "
            "--count or --correlation-id",
            EXIT_USAGE,
        )
    from ._dead_list import list_dead
    from ._dead_move import park, requeue
    from ._dead_taken import connected

    queue = _task_queue(args.queue)
    run = {"list": list_dead, "requeue": requeue, "park": park}[args.dead_command]
    return asyncio.run(connected(args, lambda channel: run(channel, queue, args)))


def _task_queue(name: Optional[str]) -> str:
    name = name or DEFAULT_QUEUE
    return name[: -len(".dead")] if name.endswith(".dead") else name


# The parser


def configure_parser(
    parser: argparse.ArgumentParser, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add ``list``, ``requeue`` and ``park`` to the ``dead`` command's *parser*; *common* adds
    ``--url`` and ``--encoder``."""
    commands = parser.add_subparsers(dest="dead_command", metavar="ACTION", required=True)
    listing = commands.add_parser(
        "list",
        help="show the dead-lettered tasks of a task queue",
        description="Show the tasks in <queue>.dead: why each is there (x-kiwipy-reason or "
        "the broker's x-death), for how long, its correlation id and the start of its body. "
        "Reads without losing anything: the messages go back in their order. On a sqlite:// "
        "file: the file's dead letters with their ids and reasons; without --queue, those of "
        "every queue.",
    )
    _queue(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object on stdout")
    listing.add_argument(
        "--limit",
        type=whole(1),
        default=100,
        metavar="N",
        help="show at most N (default: %(default)s)",
    )
    common(listing)
    requeue = commands.add_parser(
        "requeue",
        help="send dead-lettered tasks back to their task queue",
        description="Republish tasks from <queue>.dead to <queue> (confirmed by the broker "
        "before the dead copy is removed) and print each one requeued. On a sqlite:// file "
        "they go back to the end of their queue in one transaction; --id picks them by id.",
    )
    _queue(requeue)
    _which(requeue)
    common(requeue)
    park = commands.add_parser(
        "park",
        help="move waiting tasks into the dead-letter queue (to migrate or set aside a queue)",
        description="Move tasks waiting in <queue> (not those workers hold) to <queue>.dead, "
        "each confirmed by the broker before it leaves <queue>; 'requeue' sends them back. "
        "Used to migrate a kiwipy 0.9 queue (see the long tasks page of the docs). On a "
        "sqlite:// file they become dead letters with reason parked-by-operator.",
    )
    _queue(park)
    _which(park)
    common(park)


def _which(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every task there")
    which.add_argument("--count", type=whole(1), metavar="N", help="the first N (the oldest)")
    which.add_argument("--correlation-id", metavar="ID", help="those with this correlation id")
    which.add_argument(
        "--id",
        dest="ids",
        action="append",
        type=whole(1),
        metavar="N",
        help="sqlite:// only: the one with this id, as 'dead list' shows it (repeatable)",
    )


def _queue(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue", metavar="NAME", help="the task queue (or its .dead queue; default: kiwipy.tasks)"
    )
