"""``kiwipy inspect``: what the broker is, how full the task queues are, and with which
arguments each task queue was declared (and so whether kiwipy 0.9 peers can use it).

It reads without changing anything: it does not create a communicator (which would declare
exchanges and queues) but opens a plain aio-pika connection with a short timeout and uses
*passive* declares, which report a queue's ready messages and consumers, or that it does not
exist, through AMQP itself, so the management plugin is not needed. A passive declare of a
missing entity closes its channel, so each check gets a channel of its own.

AMQP cannot list queues, so without ``--queue`` the queues come from the management HTTP
API when the broker has it (:mod:`kiwipy.cli._management`); when it does not, the report
says so and shows the default task queue, which it can name. A task queue's arguments are
found by redeclaring it exactly as kiwipy would (:mod:`kiwipy.cli._declarations`), which
changes nothing. ``--watch`` refreshes the view (:mod:`kiwipy.cli._watch`).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ._common import (
    CONNECT_TIMEOUT,
    DEFAULT_QUEUE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    check_url,
    err,
    format_value,
    is_sqlite,
    mask_url,
    open_broker,
    out,
)
from ._management import ManagementUnavailable, list_queues, management_url
from ._queues import DEAD_SUFFIX, queue_state, queues_to_inspect

__all__ = ("cmd_inspect",)


def cmd_inspect(args: argparse.Namespace) -> int:
    url: str = args.url
    check_url(url)
    if args.management_url and not args.management_url.startswith(("http://", "https://")):
        raise CliError("--management-url must start with http:// or https://", EXIT_USAGE)
    if getattr(args, "count", None) is not None and not args.watch:
        raise CliError("--count goes with --watch", EXIT_USAGE)
    if getattr(args, "watch", False):
        from ._watch import cmd_watch

        return cmd_watch(args)
    if url.startswith("memory://"):
        report = _inspect_memory(args)
    elif is_sqlite(url):
        from ._sqlite import inspect_sqlite, render_sqlite

        report = inspect_sqlite(args)
        if args.json:
            out(format_value(report))
        else:
            for line in render_sqlite(report):
                out(line)
        return EXIT_OK
    else:
        report = asyncio.run(_inspect_amqp(args))
    if args.json:
        out(format_value(report))
        return EXIT_OK
    if "note" in report.get("listing", {}):
        err(f"kiwipy inspect: note: {report['listing']['note']}")
    for line in _render(report):
        out(line)
    return EXIT_OK


async def _inspect_amqp(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import aio_pika
    except ImportError:
        raise CliError("inspect needs aio-pika: pip install 'kiwipy[rmq]'") from None
    connection = await open_broker(args.url, aio_pika.connect(args.url, timeout=CONNECT_TIMEOUT))
    try:
        transport = connection.transport
        properties = dict(transport.connection.server_properties) if transport else {}
        exchanges = [
            await _exchange(connection, name)
            for name in (
                args.message_exchange or "kiwipy.messages",
                args.task_exchange or "kiwipy.tasks",
            )
        ]
        if args.queue:
            queues = [await queue_state(connection, name) for name in queues_to_inspect(args)]
            listing = None
        else:
            queues, listing = await _every_queue(connection, args)
        task_queues = set(queues_to_inspect(args))  # the others are no task queues of ours
        for queue in queues:
            name = queue["name"]
            if queue.get("exists", True) and name in task_queues:
                if not name.endswith(DEAD_SUFFIX):
                    queue["declaration"] = await _declaration(connection, name)
    finally:
        await connection.close()
    report = {
        "url": mask_url(args.url),
        "transport": "amqp",
        "broker": {key: _text(properties.get(key)) for key in _BROKER_KEYS},
        "exchanges": exchanges,
        "queues": queues,
    }
    if listing is not None:
        report["listing"] = listing
    return report


async def _every_queue(
    connection: Any, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """No ``--queue``: every queue of the vhost, from the management API; without it, the
    default task queue, and a note saying why (``listing``)."""
    base = args.management_url or management_url(args.url)
    try:
        queues = await asyncio.to_thread(list_queues, args.url, base)
    except ManagementUnavailable as exc:
        queues = [await queue_state(connection, name) for name in queues_to_inspect(args)]
        note = f"{exc}. AMQP cannot list queues, so only the default task queue is shown "
        note += "(name others with --queue)"
        return queues, {"source": "default queue only", "note": note}
    return queues, {"source": f"management API at {base}"}


_BROKER_KEYS = ("product", "version", "platform", "cluster_name")


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


async def _exchange(connection: Any, name: str) -> dict[str, Any]:
    import aiormq

    channel = await connection.channel()
    try:
        await channel.declare_exchange(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return {"name": name, "exists": False}
    finally:
        if not channel.is_closed:
            await channel.close()
    return {"name": name, "exists": True}


async def _declaration(connection: Any, name: str) -> dict[str, Any]:
    from ._declarations import identify

    return await identify(connection, name)


def _inspect_memory(args: argparse.Namespace) -> dict[str, Any]:
    """The in-process broker of *this* process: useful only when the command line runs inside
    the process that uses it (tests, notebooks calling :func:`kiwipy.cli.main`)."""
    from .. import memory

    broker = memory.get_broker(memory.broker_name(args.url))
    queues = []
    for name in args.queue or [DEFAULT_QUEUE]:
        ready, unsettled = broker.queue_stats(name)
        dead = len(broker.dead_letters(name))
        queues.append({"name": name, "messages": ready, "unacked": unsettled, "dead": dead})
    return {
        "url": args.url,
        "transport": "memory",
        "broker": {"product": "kiwipy in-process broker", "version": _version()},
        "note": "the in-process broker lives inside one Python process: this command sees "
        "only its own, empty one unless it runs inside the process that uses it",
        "memory_queues": queues,
    }


def _version() -> str:
    from .. import __version__

    return __version__


def _render(report: dict[str, Any]) -> list[str]:
    broker = report["broker"]
    platform = f" on {broker['platform']}" if broker.get("platform") else ""
    lines = [
        f"broker: {broker.get('product')} {broker.get('version')}{platform} at {report['url']}"
    ]
    if "note" in report:
        lines.append(report["note"])
    for exchange in report.get("exchanges", []):
        state = "exists" if exchange["exists"] else "does not exist"
        lines.append(f"exchange {exchange['name']}: {state}")
    for queue in report.get("memory_queues", []):
        lines.append(
            f"queue {queue['name']}: {queue['messages']} ready, {queue['unacked']} in progress, "
            f"{queue['dead']} dead-lettered"
        )
    queues = report.get("queues", [])
    if "listing" in report:
        lines.append(f"queues: {len(queues)} listed ({report['listing']['source']})")
    if queues:
        lines.extend(_queue_table(queues))
        for queue in queues:
            if "declaration" in queue:
                lines.extend(_render_declaration(queue["name"], queue["declaration"]))
    return lines


def _queue_table(queues: list[dict[str, Any]]) -> list[str]:
    width = max(len("queue"), *(len(q["name"]) for q in queues))
    unacked = any("unacked" in q for q in queues)  # only the management API tells
    middle = f"  {'unacked':>7}" if unacked else ""
    lines = [f"{'queue':<{width}}  {'ready':>7}{middle}  {'consumers':>9}"]
    for queue in queues:
        if not queue.get("exists", True):
            lines.append(f"{queue['name']:<{width}}  (does not exist)")
            continue
        middle = f"  {queue.get('unacked', ''):>7}" if unacked else ""
        lines.append(
            f"{queue['name']:<{width}}  {queue['messages']:>7}{middle}  {queue['consumers']:>9}"
        )
    return lines


#: Where the docs explain what to do about a task queue kiwipy 0.9 senders cannot use.
COMPAT_DOCS = "docs/guarantees.md, 'Sharing task queues with kiwipy 0.9'"


def _render_declaration(name: str, found: dict[str, Any]) -> list[str]:
    """Lines saying how task queue *name* was declared and whether 0.9 peers can use it."""
    if found["declared_as"] is None:
        declared = "not declared the way kiwipy declares task queues"
    else:
        kind = "durable" if found["durable"] else "transient"
        arguments = ", ".join(f"{key}={value!r}" for key, value in found["arguments"].items())
        declared = f"declared as {found['declared_as']} ({kind}; {arguments or 'no arguments'})"
    lines = [f"{name}: {declared}"]
    if found["kiwipy09"] is not None:
        mode = "outside" if found["kiwipy09"] == "production" else "in"
        lines.append(f"  kiwipy 0.9 peers {mode} testing mode can declare it")
        return lines
    lines.append(
        "  kiwipy 0.9 peers cannot declare it: a 0.9 sender fails with "
        f"TaskRejected({found['kiwipy09_refusal'] or 'PRECONDITION_FAILED ...'!r})"
    )
    lines.append(
        f"  fix: task_queue_compat=True for new queues, or migrate this queue (see {COMPAT_DOCS})"
    )
    return lines
