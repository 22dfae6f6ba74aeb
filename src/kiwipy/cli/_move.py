"""``kiwipy move --from sqlite:///x.db --to amqp://...``: move the tasks waiting in a SQLite
file to RabbitMQ, as a project outgrows one host.

Each waiting (ready) task is decoded from the file (its body is the encoded
``(task, no_reply)`` pair), sent to RabbitMQ's task queue of the same name through this
library's RabbitMQ communicator with the encoder it was stored with (a send returns once the
broker confirmed it), and only then deleted from the file. So a failure in between leaves a
task in both places, never in neither; a task that cannot be sent (it does not decode, or
the broker refused it) stays in the file and the command exits with status 1.

Tasks a worker on the file holds are not moved, and one a worker takes while the command
runs stays with that worker (and may then run twice: stop the file's workers first). The
moved tasks go as ``no_reply``: a sender waiting on the file for a result never gets it,
and the output counts them. A task past its deadline stays in the file; one with time left
keeps what is left as its timeout. Cancelled tasks stay in the file.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Optional

from .. import exceptions
from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    check_url,
    connect_from_args,
    describe,
    err,
    is_sqlite,
    mask_url,
    out,
)
from ._input import whole
from ._sqlite import open_admin

__all__ = ("cmd_move", "configure_parser")

_BATCH = 200

REPLIES_NOTE = (
    "moved tasks go to RabbitMQ without a reply address: their results cannot reach senders "
    "waiting on the SQLite file"
)


class _Tally:
    def __init__(self) -> None:
        self.moved = 0
        self.waited = 0  # moved tasks whose sender was waiting for a result
        self.failed = 0
        self.expired = 0
        self.cancelled = 0
        self.taken = 0  # sent, but a file worker took it meanwhile: it may run twice


def cmd_move(args: argparse.Namespace) -> int:
    if not is_sqlite(args.source):
        raise CliError(
            f"--from must be a sqlite:// URL (sqlite:///relative.db or sqlite:////abs.db), "
            f"not {mask_url(args.source)!r}",
            EXIT_USAGE,
        )
    check_url(args.source)
    check_url(args.url)
    if not args.url.startswith(("amqp://", "amqps://")):
        raise CliError(f"--to must be an amqp:// or amqps:// URL, not {mask_url(args.url)!r}")
    tally = _Tally()
    with open_admin(args.source) as admin:
        names = args.queues or [q.name for q in admin.queues() if q.ready]
        if not names:
            err(f"kiwipy move: no task waits in {admin.path}: nothing to move")
            return EXIT_OK
        senders = _Senders(args)
        try:
            for name in names:
                _move_queue(admin, senders, name, args, tally)
                if args.count is not None and tally.moved >= args.count:
                    break
        finally:
            senders.close()
        left = sum(q.ready for q in admin.queues(names))
        path = admin.path
    _report(tally, path, left)
    return EXIT_FAILURE if tally.failed else EXIT_OK


class _Senders:
    """One RabbitMQ communicator per encoder the file's tasks use, made on first need."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._communicators: dict[str, Any] = {}
        self._queues: dict[tuple[str, str], Any] = {}

    def queue(self, encoder: str, name: str) -> Any:
        from .. import encoders

        key = (encoder, name)
        if key not in self._queues:
            if encoder not in self._communicators:
                self._communicators[encoder] = connect_from_args(
                    self._args, encoder=encoders.get_encoder(encoder)
                )
            self._queues[key] = self._communicators[encoder].task_queue(name)
        return self._queues[key]

    def close(self) -> None:
        for communicator in self._communicators.values():
            try:
                communicator.close()
            except Exception:  # closing is best effort: the sends were confirmed already
                pass


def _move_queue(
    admin: Any, senders: _Senders, name: str, args: argparse.Namespace, tally: _Tally
) -> None:
    from ..sqlite import SqliteAdmin

    after = 0
    while True:
        rows = admin.ready_tasks(name, _BATCH, after)
        if not rows:
            return
        for row in rows:
            after = row.id
            if args.count is not None and tally.moved >= args.count:
                return
            if row.cancelled:
                tally.cancelled += 1
                continue
            timeout: Optional[float] = None
            if row.deadline is not None:
                timeout = row.deadline - time.time()
                if timeout <= 0:
                    tally.expired += 1
                    continue
            try:
                task, no_reply = SqliteAdmin.decode_task(row)
            except exceptions.DecodeError as exc:
                tally.failed += 1
                err(f"kiwipy move: left task {row.id} of {name!r} in the file: {exc}")
                continue
            try:
                queue = senders.queue(row.encoder, name)
                queue.task_send(task, no_reply=True, timeout=timeout)
            except CliError:
                raise
            except (exceptions.KiwiError, OSError, ValueError, TypeError) as exc:
                tally.failed += 1
                raise CliError(
                    f"RabbitMQ did not take task {row.id} of {name!r}: {describe(exc)}; it and "
                    f"the tasks after it stay in the file ({tally.moved} moved so far)"
                ) from None
            if admin.delete_ready([row.id]) == 0:
                tally.taken += 1
            tally.moved += 1
            if not no_reply:
                tally.waited += 1
            out(f"moved {row.correlation_id} of {name} to RabbitMQ")


def _report(tally: _Tally, path: str, left: int) -> None:
    err(
        f"kiwipy move: moved {tally.moved} task(s) from {path} to RabbitMQ; {left} still wait there"
    )
    err(
        f"kiwipy move: note: {REPLIES_NOTE}"
        + (f" ({tally.waited} had a sender waiting)" if tally.waited else "")
    )
    if tally.taken:
        err(
            f"kiwipy move: warning: {tally.taken} task(s) were taken by a worker on the file "
            "while being moved: they may run twice (stop the file's workers before moving)"
        )
    for count, why in (
        (tally.expired, "past their deadline"),
        (tally.cancelled, "cancelled by their senders"),
        (tally.failed, "could not be sent"),
    ):
        if count:
            err(f"kiwipy move: left {count} task(s) in the file: {why}")


def configure_parser(parser: argparse.ArgumentParser, default_url: str) -> None:
    """Add the options of ``kiwipy move`` to *parser*."""
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="URL",
        help="the SQLite file: sqlite:///relative/path.db or sqlite:////absolute/path.db",
    )
    parser.add_argument(
        "--to",
        dest="url",
        default=default_url,
        metavar="URL",
        help="the RabbitMQ broker: amqp://user:password@host:port/vhost or amqps://... "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--queue",
        dest="queues",
        action="append",
        metavar="NAME",
        help="move the tasks of this queue only (repeatable; default: every queue of the file)",
    )
    parser.add_argument(
        "--count",
        type=whole(1),
        metavar="N",
        help="move at most N tasks, the oldest first (default: all)",
    )
    parser.add_argument("--task-exchange", metavar="NAME", help="RabbitMQ's exchange for tasks")
    parser.add_argument(
        "--message-exchange", metavar="NAME", help="RabbitMQ's exchange for RPCs and broadcasts"
    )
    parser.set_defaults(encoder="yaml")
