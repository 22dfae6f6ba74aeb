"""``kiwipy dead list`` on RabbitMQ: the tasks in ``<queue>.dead``, each with why it is
there, for how long, its correlation id and the start of its body; read without losing any
(:mod:`._dead_taken`)."""

from __future__ import annotations

import argparse
import datetime
import time
from typing import Any, Callable

from ._common import EXIT_OK, age, format_value, out
from ._dead_headers import dead_reason, dead_since
from ._dead_taken import Taken

__all__ = ("list_dead",)

#: Bodies larger than this are shown as bytes, never decoded (YAML can take 300 times a
#: body's size in memory to decode it).
_PREVIEW_DECODE_LIMIT = 256 * 1024
_PREVIEW = 60


async def list_dead(channel: Any, queue: str, args: argparse.Namespace) -> int:
    from .. import encoders

    dead = Taken(channel, queue)
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
