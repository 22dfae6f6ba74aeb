"""``kiwipy inspect`` and ``kiwipy dead`` on a ``sqlite://`` file.

Both go through :class:`kiwipy.sqlite.SqliteAdmin`, which opens the file without joining it
as a process (the other processes never see the command) and never creates it: a missing
file is an error, not a new empty database. The file knows every queue, every process and
every dead letter, so unlike AMQP nothing needs the management plugin, and a dead letter has
a stable id (``kiwipy dead list`` shows it; ``--id`` picks it).

Requeued dead letters go to the end of their queue with nobody waiting for their results
(their senders were told already); parked tasks (``kiwipy dead park``) keep their body and
correlation id and get the reason ``parked-by-operator``.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, Protocol, TypeVar

from ._common import (
    DEFAULT_QUEUE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    age,
    describe,
    err,
    format_value,
    out,
)

if TYPE_CHECKING:
    from ..sqlite import SqliteAdmin

__all__ = ("cmd_dead_sqlite", "inspect_sqlite", "open_admin", "render_sqlite", "SqliteSampler")

_PREVIEW = 60
_PREVIEW_DECODE_LIMIT = 256 * 1024
_DEAD_SUFFIX = ".dead"


class _Picked(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def correlation_id(self) -> str: ...


T = TypeVar("T", bound=_Picked)


def open_admin(url: str) -> SqliteAdmin:
    """:returns: the admin of the existing file *url* names.

    :raises CliError: for a bad URL (usage), or a file that is missing or not kiwipy's.
    """
    from .. import exceptions
    from ..sqlite import SqliteAdmin

    try:
        return SqliteAdmin(url)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except OSError as exc:  # missing file or directory: the text names the path
        raise CliError(exc.strerror or describe(exc)) from None
    except exceptions.StorageError as exc:
        raise CliError(str(exc)) from None


def _iso(epoch: Optional[float]) -> Optional[str]:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


def _strip_dead(name: str) -> str:
    return name[: -len(_DEAD_SUFFIX)] if name.endswith(_DEAD_SUFFIX) else name


# inspect


def inspect_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    """:returns: the report of ``kiwipy inspect`` on the file (``--json`` prints it)."""
    from .. import __version__

    names = None if not args.queue else list(dict.fromkeys(_strip_dead(q) for q in args.queue))
    with open_admin(args.url) as admin:
        queues = admin.queues(names)
        processes = admin.processes()
        path = admin.path
    return {
        "url": args.url,
        "transport": "sqlite",
        "file": path,
        "broker": {"product": "kiwipy SQLite transport", "version": __version__},
        "sqlite_queues": [queue._asdict() for queue in queues],
        "processes": [
            {
                "id": p.id,
                "pid": p.pid,
                "host": p.host,
                "since": _iso(p.started),
                "alive": p.alive,
                "consumers": p.consumers,
                "rpc": p.rpc,
            }
            for p in processes
        ],
    }


def render_sqlite(report: dict[str, Any]) -> list[str]:
    """:returns: the lines ``kiwipy inspect`` prints for *report*."""
    broker = report["broker"]
    lines = [f"file: {report['file']} ({broker['product']}, kiwipy {broker['version']})"]
    queues = report["sqlite_queues"]
    if not queues:
        lines.append("queues: none (no task waits, runs or is dead-lettered; no consumers)")
    else:
        width = max(len("queue"), *(len(q["name"]) for q in queues))
        lines.append(
            f"{'queue':<{width}}  {'ready':>7}  {'unsettled':>9}  {'consumers':>9}  {'dead':>6}"
        )
        for q in queues:
            lines.append(
                f"{q['name']:<{width}}  {q['ready']:>7}  {q['unsettled']:>9}  "
                f"{q['consumers']:>9}  {q['dead']:>6}"
            )
    live = [p for p in report["processes"] if p["alive"]]
    gone = [p for p in report["processes"] if not p["alive"]]
    lines.append(f"processes: {len(live)} live" + (f", {len(gone)} dead" if gone else ""))
    for process in live:
        lines.append("  " + _process_line(process))
    for process in gone:
        lines.append(
            "  " + _process_line(process) + " -- DEAD, not yet released: the next live process"
            " to check its peers gives its tasks back to their queues"
        )
    return lines


def _process_line(process: dict[str, Any]) -> str:
    consumers = ", ".join(f"{name} x{count}" for name, count in process["consumers"].items())
    rpc = ", ".join(process["rpc"])
    return (
        f"process {process['id']}: pid {process['pid']} on {process['host']} since "
        f"{process['since']}; consumers: {consumers or '-'}; RPC identifiers: {rpc or '-'}"
    )


class SqliteSampler:
    """The samples of ``kiwipy inspect --watch`` on a file (see :mod:`kiwipy.cli._watch`)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._admin = open_admin(args.url)
        self._names = None if not args.queue else [_strip_dead(q) for q in args.queue]

    def close(self) -> None:
        self._admin.close()

    def queues(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        queues = self._admin.queues(self._names) or self._admin.queues([DEFAULT_QUEUE])
        for queue in queues:
            rows.append(
                {
                    "name": queue.name,
                    "exists": True,
                    "messages": queue.ready,
                    "unacked": queue.unsettled,
                    "consumers": queue.consumers,
                }
            )
            rows.append({"name": queue.name + _DEAD_SUFFIX, "exists": True, "messages": queue.dead})
        return rows


# dead


def cmd_dead_sqlite(args: argparse.Namespace) -> int:
    """``kiwipy dead list | requeue | park`` on the file of ``--url``."""
    with open_admin(args.url) as admin:
        if args.dead_command == "list":
            return _list(admin, args)
        if args.dead_command == "requeue":
            return _requeue(admin, args)
        return _park(admin, args)


def _preview(body: bytes, row: Any) -> str:
    from ..sqlite import SqliteAdmin

    if len(body) > _PREVIEW_DECODE_LIMIT:
        text = repr(body[:_PREVIEW])
    else:
        try:
            text = format_value(SqliteAdmin.decode_task(row)[0])
        except Exception:
            text = repr(body[:_PREVIEW])
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."


def _list(admin: SqliteAdmin, args: argparse.Namespace) -> int:
    queue = None if args.queue is None else _strip_dead(args.queue)
    letters = admin.dead_letters(queue)
    shown = letters[: args.limit]
    rows: list[dict[str, Any]] = [
        {
            "id": letter.id,
            "queue": letter.queue,
            "reason": letter.reason,
            "deliveries": letter.deliveries,
            "dead_since": _iso(letter.died),
            "age_seconds": round(time.time() - letter.died, 1),
            "correlation_id": letter.correlation_id,
            "size": len(letter.body),
            "body": _preview(letter.body, letter),
        }
        for letter in shown
    ]
    where = f"queue {queue!r}" if queue is not None else "every queue"
    if args.json:
        out(
            format_value(
                {"file": admin.path, "queue": queue, "total": len(letters), "messages": rows}
            )
        )
        return EXIT_OK
    more = f" (showing the first {len(rows)})" if len(rows) < len(letters) else ""
    out(f"{admin.path}, {where}: {len(letters)} dead-lettered task(s){more}")
    if rows:
        qwidth = max(len("queue"), *(len(r["queue"]) for r in rows))
        rwidth = max(len("reason"), *(len(r["reason"].splitlines()[0]) for r in rows))
        out(
            f"{'id':>5}  {'queue':<{qwidth}}  {'reason':<{rwidth}}  {'dead for':>8}  "
            f"{'correlation id':<36}  body"
        )
        for r in rows:
            reason = r["reason"].splitlines()[0]
            out(
                f"{r['id']:>5}  {r['queue']:<{qwidth}}  {reason:<{rwidth}}  "
                f"{age(r['age_seconds']):>8}  {r['correlation_id'] or '-':<36}  {r['body']}"
            )
    return EXIT_OK


def _choose(items: Sequence[T], args: argparse.Namespace, what: str) -> list[T]:
    """The *items* (dead letters or waiting tasks, oldest first) the options pick."""
    if args.ids:
        wanted = set(args.ids)
        chosen = [item for item in items if item.id in wanted]
        missing = sorted(wanted - {item.id for item in chosen})
        if missing:
            raise CliError(f"no {what} there has id {', '.join(map(str, missing))}")
        return chosen
    if args.correlation_id is not None:
        chosen = [i for i in items if i.correlation_id == args.correlation_id]
        if not chosen:
            raise CliError(f"no {what} there has correlation id {args.correlation_id!r}")
        return chosen
    if args.all:
        return list(items)
    return list(items[: args.count])


def _requeue(admin: SqliteAdmin, args: argparse.Namespace) -> int:
    queue = _strip_dead(args.queue or DEFAULT_QUEUE)
    letters = admin.dead_letters(queue)
    chosen = _choose(letters, args, "dead-lettered task")
    done = admin.requeue_dead([letter.id for letter in chosen])
    for letter in chosen:
        reason = letter.reason.splitlines()[0] if letter.reason else "?"
        out(f"requeued {letter.correlation_id} ({reason}) to {queue}")
    err(
        f"kiwipy dead requeue: requeued {done} of {len(letters)} dead-lettered task(s) to "
        f"{queue!r} in {admin.path}"
    )
    return EXIT_OK


def _park(admin: SqliteAdmin, args: argparse.Namespace) -> int:
    queue = _strip_dead(args.queue or DEFAULT_QUEUE)
    waiting = []
    after = 0
    while True:
        batch = admin.ready_tasks(queue, 1000, after)
        if not batch:
            break
        waiting.extend(batch)
        after = batch[-1].id
    chosen = _choose(waiting, args, "waiting task")
    done = admin.park([row.id for row in chosen])
    for row in chosen:
        out(f"parked {row.correlation_id} (parked-by-operator) to {queue}{_DEAD_SUFFIX}")
    err(
        f"kiwipy dead park: parked {done} of {len(waiting)} waiting task(s) of {queue!r} in "
        f"{admin.path}"
        + (
            f" ({len(chosen) - done} were taken by a worker meanwhile)"
            if done < len(chosen)
            else ""
        )
    )
    return EXIT_OK
