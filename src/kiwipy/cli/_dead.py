"""``kiwipy dead list | requeue | park``: the tasks in a task queue's ``<queue>.dead``.

How it reads without losing anything: every message is taken with ``basic.get`` *without*
acknowledgement (none can be lost if this process dies: the broker gives unacknowledged
messages back when the connection closes), and each one not moved is given back with
``basic.nack(requeue=True)``. RabbitMQ puts a message given back at its original place, so
the queue keeps its order; only the ``redelivered`` flag of the messages is set. The number
of messages is read first (passive declare), so a message arriving while the command runs is
left alone, never read twice.

``requeue`` (``<queue>.dead`` to ``<queue>``) and ``park`` (``<queue>`` to ``<queue>.dead``,
for migrating or setting aside a queue) republish each chosen message through the default
exchange (``mandatory``, with a publisher confirm) and acknowledge the original only once the
broker has confirmed the copy: a failure in between leaves two copies, never none. A copy
keeps the body and the properties that matter (``correlation_id``, ``reply_to``,
``message_id``), so its result still reaches a sender that waits. A requeued copy loses the
dead-letter headers (``x-death``, ``x-kiwipy-reason``, ...) and any lease headers, and
``x-kiwipy-requeued`` counts how many times it came back from the dead; a parked one gets
``x-kiwipy-reason: parked-by-operator``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from ._common import (
    DEFAULT_QUEUE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    age,
    check_url,
    err,
    format_value,
    is_sqlite,
    open_broker,
    out,
)
from ._input import whole

__all__ = (
    "cmd_dead",
    "configure_parser",
    "dead_reason",
    "parked_headers",
    "requeued_headers",
)

REQUEUED_HEADER = "x-kiwipy-requeued"
_DROPPED_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", "x-kiwipy-")
_DROPPED = ("x-delivery-count",)
#: Bodies larger than this are shown as bytes, never decoded (YAML can take 300 times a
#: body's size in memory to decode it).
_PREVIEW_DECODE_LIMIT = 256 * 1024
_PREVIEW = 60


# What a dead message says (pure)


def dead_reason(headers: Optional[dict[str, Any]]) -> tuple[str, str]:
    """:returns: ``(reason, detail)`` of a dead-lettered message: kiwipy's
    ``x-kiwipy-reason`` for a parked task, else the broker's latest ``x-death`` entry
    (``expired``, ``delivery_limit``, ``rejected``, ``maxlen``)."""
    headers = headers or {}
    reason = headers.get("x-kiwipy-reason")
    if reason:
        return _text(reason), _text(headers.get("x-kiwipy-error", ""))
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        death = deaths[0]
        count = death.get("count", 1)
        return _text(death.get("reason", "unknown")), f"from {_text(death.get('queue', '?'))}" + (
            f" ({count} times)" if count and count > 1 else ""
        )
    return "unknown", ""


def dead_since(headers: Optional[dict[str, Any]]) -> Optional[float]:
    """:returns: when the message was dead-lettered or parked (seconds since the epoch)."""
    headers = headers or {}
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        when = deaths[0].get("time")
        if isinstance(when, datetime.datetime):
            return when.timestamp()
    parked = headers.get("x-kiwipy-parked-at")
    return float(parked) if isinstance(parked, (int, float)) else None


def parked_headers(headers: Optional[dict[str, Any]], queue: str) -> dict[str, Any]:
    """:returns: the headers of a waiting task an operator parks (``kiwipy dead park``)."""
    parked = dict(headers or {})
    parked.update(
        {
            "x-kiwipy-reason": "parked-by-operator",
            "x-kiwipy-original-queue": queue,
            "x-kiwipy-parked-at": int(time.time()),
        }
    )
    return parked


def requeued_headers(headers: Optional[dict[str, Any]]) -> dict[str, Any]:
    """:returns: the headers of a message sent back from the dead (module doc)."""
    headers = headers or {}
    kept = {
        key: value
        for key, value in headers.items()
        if not key.startswith(_DROPPED_PREFIXES) and key not in _DROPPED
    }
    previous = headers.get(REQUEUED_HEADER, 0)
    kept[REQUEUED_HEADER] = (previous if isinstance(previous, int) else 0) + 1
    return kept


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# Reading the queue


class _Taken:
    """The messages taken (unacknowledged) from one queue: ``<queue>.dead``, or the task
    queue itself for ``park``."""

    def __init__(self, channel: Any, queue: str, source: Optional[str] = None) -> None:
        self.channel = channel
        self.queue = queue
        self.dead = queue + ".dead"
        self.source = source or self.dead
        self.total = 0
        self.messages: list[Any] = []

    async def take(self, limit: Optional[int]) -> None:
        from aiormq import exceptions as amqp_errors
        from pamqp import commands as spec

        try:
            ok = await self.channel.queue_declare(self.source, passive=True)
        except amqp_errors.ChannelNotFoundEntity:
            raise CliError(
                f"queue {self.source!r} does not exist (is {self.queue!r} a task queue?)"
            ) from None
        self.total = int(ok.message_count or 0)
        wanted = self.total if limit is None else min(self.total, limit)
        while len(self.messages) < wanted:
            message = await self.channel.basic_get(self.source, no_ack=False)
            if not isinstance(message.delivery, spec.Basic.GetOk):
                break
            self.messages.append(message)

    async def give_back(self, messages: Sequence[Any]) -> None:
        """Return *messages* to the queue, at their places."""
        for message in messages:
            await self.channel.basic_nack(message.delivery_tag, requeue=True)


def _describe(position: int, message: Any, decode: Callable[[bytes], Any]) -> dict[str, Any]:
    props = message.header.properties
    reason, detail = dead_reason(props.headers)
    since = dead_since(props.headers)
    return {
        "position": position,
        "reason": reason,
        "detail": detail,
        "dead_since": None if since is None else _iso(since),
        "age_seconds": None if since is None else round(time.time() - since, 1),
        "correlation_id": props.correlation_id,
        "message_id": props.message_id,
        "reply_to": props.reply_to,
        "size": len(message.body),
        "body": _preview(message.body, decode),
    }


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat()


def _preview(body: bytes, decode: Callable[[bytes], Any]) -> str:
    from ..rmq import protocol

    if len(body) > _PREVIEW_DECODE_LIMIT:  # parked as too large: decoding could take GiBs
        text = repr(body[:_PREVIEW])
    else:
        try:
            text = format_value(protocol.decode_task(decode(body)).task)
        except Exception:
            text = repr(body[:_PREVIEW])
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."


# The commands


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
    queue = _task_queue(args.queue)
    run = {"list": _list, "requeue": _requeue, "park": _park}[args.dead_command]
    return asyncio.run(_connected(args, lambda channel: run(channel, queue, args)))


def _task_queue(name: Optional[str]) -> str:
    name = name or DEFAULT_QUEUE
    return name[: -len(".dead")] if name.endswith(".dead") else name


async def _connected(args: argparse.Namespace, work: Callable[[Any], Any]) -> int:
    try:
        import aiormq
    except ImportError:
        raise CliError("dead needs aiormq: pip install 'kiwipy[rmq]'") from None
    connection = await open_broker(args.url, aiormq.connect(args.url))
    try:
        channel = await connection.channel(publisher_confirms=True)
        code: int = await work(channel)
        return code
    finally:
        await connection.close()


async def _list(channel: Any, queue: str, args: argparse.Namespace) -> int:
    from .. import encoders

    dead = _Taken(channel, queue)
    try:
        await dead.take(args.limit)
    finally:
        await dead.give_back(dead.messages)
    decode = encoders.get_encoder(args.encoder).decode
    rows = [_describe(i + 1, m, decode) for i, m in enumerate(dead.messages)]
    if args.json:
        out(format_value({"queue": dead.dead, "total": dead.total, "messages": rows}))
        return EXIT_OK
    shown = f" (showing the first {len(rows)})" if len(rows) < dead.total else ""
    out(f"{dead.dead}: {dead.total} dead-lettered task(s){shown}")
    for line in _table(rows):
        out(line)
    return EXIT_OK


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    width = max(len("reason"), *(len(r["reason"]) for r in rows))
    lines = [f"{'#':>3}  {'reason':<{width}}  {'dead for':>8}  {'correlation id':<36}  body"]
    for row in rows:
        age_text = age(row["age_seconds"])
        corr = row["correlation_id"] or "-"
        lines.append(
            f"{row['position']:>3}  {row['reason']:<{width}}  {age_text:>8}  {corr:<36}  {row['body']}"
        )
        if row["detail"]:  # its first line: a YAML error goes on with the position
            lines.append(f"{'':>3}  {row['detail'].splitlines()[0]}")
    return lines


async def _requeue(channel: Any, queue: str, args: argparse.Namespace) -> int:
    taken = _Taken(channel, queue)
    done = await _move(taken, queue, args, requeued_headers, "requeued")
    err(f"kiwipy dead requeue: requeued {done} of {taken.total} dead-lettered task(s) to {queue!r}")
    return EXIT_OK


async def _park(channel: Any, queue: str, args: argparse.Namespace) -> int:
    taken = _Taken(channel, queue, source=queue)
    done = await _move(taken, taken.dead, args, lambda h: parked_headers(h, queue), "parked")
    err(f"kiwipy dead park: parked {done} of {taken.total} waiting task(s) in {taken.dead!r}")
    return EXIT_OK


async def _move(
    taken: _Taken,
    target: str,
    args: argparse.Namespace,
    headers: Callable[[Optional[dict[str, Any]]], dict[str, Any]],
    verb: str,
) -> int:
    """Move the chosen messages of *taken* to the queue *target*, each confirmed by the broker
    before its original is acknowledged; every other message goes back at its place."""
    sent: set[int] = set()
    try:
        await taken.take(None if args.all or args.correlation_id else args.count)
        for message in _choose(taken.messages, args):
            await _republish(taken.channel, target, message, headers)
            sent.add(id(message))
            reason = dead_reason(message.header.properties.headers)[0]
            props = message.header.properties
            out(f"{verb} {props.correlation_id or props.message_id} ({reason}) to {target}")
    finally:
        await taken.give_back([m for m in taken.messages if id(m) not in sent])
    return len(sent)


def _choose(messages: list[Any], args: argparse.Namespace) -> list[Any]:
    if args.correlation_id is not None:
        chosen = [m for m in messages if m.header.properties.correlation_id == args.correlation_id]
        if not chosen:
            raise CliError(f"no task there has correlation id {args.correlation_id!r}")
        return chosen
    if args.all:
        return list(messages)
    return list(messages[: args.count])


async def _republish(
    channel: Any,
    target: str,
    message: Any,
    headers: Callable[[Optional[dict[str, Any]]], dict[str, Any]],
) -> None:
    from aiormq import exceptions as amqp_errors

    from ..rmq.leases._leases import copy_properties

    props = message.header.properties
    copy = copy_properties(props, headers(props.headers))
    try:
        await channel.basic_publish(
            message.body, exchange="", routing_key=target, properties=copy, mandatory=True
        )
    except amqp_errors.PublishError:
        raise CliError(f"queue {target!r} does not exist: nothing was moved to it") from None
    await channel.basic_ack(message.delivery_tag)


# The parser


def configure_parser(
    parser: argparse.ArgumentParser, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add ``list`` and ``requeue`` to the ``dead`` command's *parser*; *common* adds
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
