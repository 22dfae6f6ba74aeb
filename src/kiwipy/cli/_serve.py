"""The long-running subcommands: ``worker``, ``serve`` and ``listen``.

Each one subscribes, prints a ``ready`` line on stderr, then waits in the main thread until
Ctrl-C (SIGINT), SIGTERM or ``--max-messages`` stops it (:mod:`kiwipy.cli._running`: the
counting, the progress line, the drain on the first signal and the stop at once on the
second). Subscribers run on the communicator's threads; a worker runs at most
``--concurrency`` tasks at once, and the broker's prefetch (``--prefetch``, by default the
concurrency) keeps the rest of a backlog for other workers. A task or call that raises is
logged with its traceback (which also goes to the sender, as ``remote_traceback``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import re
import threading
import traceback
from typing import Any, Callable, Optional

from .. import exceptions
from ..filters import BroadcastFilter
from ._common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    connect_from_args,
    err,
    format_value,
    load_callable,
    mask_url,
    out,
    queue_name,
)
from ._running import LibraryLog, Tally, drain, preview, stop_on_signals, wait_until_stopped

__all__ = ("cmd_listen", "cmd_serve", "cmd_worker")

_TICK = 0.1


def _call(func: Callable[..., Any], *args: Any) -> Any:
    """Call the user's function; run it to completion if it is a coroutine function."""
    result = func(*args)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _handler(
    args: argparse.Namespace,
    tally: Tally,
    func: Callable[..., Any],
    slots: Optional[threading.BoundedSemaphore] = None,
) -> Callable[[Any, Any], Any]:
    """:returns: the subscriber that runs *func* on one message and counts the outcome;
    with *slots*, at most that many run at once (the others wait for a slot)."""
    kind = tally.noun

    def subscriber(communicator: Any, message: Any) -> Any:
        if not tally.claim() or (slots is not None and not _take_slot(slots, tally)):
            if kind == "task":
                raise exceptions.TaskRejected("this worker is stopping")
            raise RuntimeError("this server is stopping")
        call_args = (communicator, message) if args.with_communicator else (message,)
        try:
            result = _call(func, *call_args)
        except Exception as exc:
            _log_failure(kind, message, exc)
            tally.done(ok=False)
            raise
        finally:
            if slots is not None:
                slots.release()
        if args.verbose:
            err(f"{kind} {preview(message)} -> {preview(result)}")
        tally.done(ok=True)
        return result

    return subscriber


def _take_slot(slots: threading.BoundedSemaphore, tally: Tally) -> bool:
    """Wait for a free slot; :returns: ``False`` (the message unclaimed) if the command
    starts stopping first, so a task waiting here goes back to the queue unstarted."""
    while not slots.acquire(timeout=_TICK):
        if tally.stop.is_set():
            tally.unclaim()
            return False
    if tally.stop.is_set():
        slots.release()
        tally.unclaim()
        return False
    return True


def _log_failure(kind: str, message: Any, exc: BaseException) -> None:
    """Log a failed task or call with its traceback, without this module's frames."""
    trace = exc.__traceback__
    while trace is not None and trace.tb_frame.f_code.co_filename == __file__:
        trace = trace.tb_next
    lines = traceback.format_exception(type(exc), exc, trace)
    err(f"{kind} {preview(message)} raised {type(exc).__name__}: {exc}\n{''.join(lines)}", end="")


def _finish(
    label: str, tally: Tally, remove: Callable[[], None], grace: Optional[float] = None
) -> int:
    """Stop taking messages, drain within *grace* seconds, and print the summary."""
    tally.stop.set()
    try:
        remove()
    except Exception:  # the communicator may already be gone; the summary still counts
        pass
    unfinished = drain(tally, label, grace or 0.0)
    fate = "handed back to the queue" if tally.noun == "task" else "abandoned"
    how = "at once" if tally.force.is_set() else "after the grace period"
    back = f"; {unfinished} unfinished, {fate} ({how})" if unfinished else ""
    err(f"{label}: stopped; {tally.summary()}{back}")
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    """``kiwipy worker module:function``: consume tasks with a Python callable."""
    func = load_callable(args.callable)
    if args.prefetch is None:
        args.prefetch = args.concurrency  # what connect_from_args passes on
    tally = Tally("task", args.max_messages)
    label = "kiwipy worker"
    slots = threading.BoundedSemaphore(args.concurrency)
    with stop_on_signals(tally), LibraryLog(label, tally).installed():
        with connect_from_args(args) as communicator:
            identifier = communicator.add_task_subscriber(_handler(args, tally, func, slots))
            prefetch = f"prefetch {args.prefetch}" if args.prefetch else "no prefetch limit"
            err(
                f"{label}: ready: {args.callable} takes tasks from queue {queue_name(args)!r} "
                f"at {mask_url(args.url)}, concurrency {args.concurrency}, {prefetch}, grace "
                f"{args.grace:g} s (Ctrl-C to stop)"
            )
            wait_until_stopped(tally, label)
            remove = functools.partial(communicator.remove_task_subscriber, identifier)
            return _finish(label, tally, remove, args.grace)


def cmd_serve(args: argparse.Namespace) -> int:
    """``kiwipy serve IDENTIFIER module:function``: answer RPCs with a Python callable."""
    func = load_callable(args.callable)
    tally = Tally("call", args.max_messages)
    label = "kiwipy serve"
    with stop_on_signals(tally), LibraryLog(label, tally).installed():
        with connect_from_args(args) as communicator:
            try:
                communicator.add_rpc_subscriber(_handler(args, tally, func), args.identifier)
            except exceptions.DuplicateSubscriberIdentifier:
                raise CliError(f"someone already answers RPCs as {args.identifier!r}") from None
            err(
                f"{label}: ready: {args.callable} answers RPCs to {args.identifier!r} "
                f"at {mask_url(args.url)}, grace {args.grace:g} s (Ctrl-C to stop)"
            )
            wait_until_stopped(tally, label)
            remove = functools.partial(communicator.remove_rpc_subscriber, args.identifier)
            return _finish(label, tally, remove, args.grace)


def cmd_listen(args: argparse.Namespace) -> int:
    """``kiwipy listen``: print broadcasts as they arrive, optionally filtered."""
    tally = Tally("broadcast", args.max_messages)
    lock = threading.Lock()

    def show(_comm: Any, body: Any, sender: Any, subject: Any, correlation_id: Any) -> None:
        if not tally.claim():
            return
        with lock:
            if args.json:
                record = {
                    "subject": subject,
                    "sender": sender,
                    "correlation_id": correlation_id,
                    "body": body,
                }
                out(format_value(record))
            else:
                extra = f" (correlation id {correlation_id})" if correlation_id is not None else ""
                out(f"[{subject}] from {sender}: {format_value(body)}{extra}")
        tally.done(ok=True)

    listener = _listener(args, show)
    with stop_on_signals(tally), connect_from_args(args) as communicator:
        identifier = communicator.add_broadcast_subscriber(listener)
        filters = _describe_filters(args)
        err(
            f"kiwipy listen: ready: listening for broadcasts{filters} at {mask_url(args.url)} "
            "(Ctrl-C to stop)"
        )
        wait_until_stopped(tally, "kiwipy listen")
        return _finish(
            "kiwipy listen", tally, lambda: communicator.remove_broadcast_subscriber(identifier)
        )


def _listener(args: argparse.Namespace, show: Callable[..., None]) -> BroadcastFilter:
    """:returns: the broadcast filter of ``--subject``/``--sender``.

    :raises CliError: (usage) for a pattern that is not a valid regular expression (kiwipy
        0.9's patterns are, with ``.`` literal and ``*`` for anything).
    """
    listener = BroadcastFilter(show)
    for option, values, add in (
        ("--subject", args.subject, listener.add_subject_filter),
        ("--sender", args.sender, listener.add_sender_filter),
    ):
        for value in values or ():
            try:
                add(value)
            except re.error as exc:
                raise CliError(
                    f"bad {option} pattern {value!r}: {exc} (a pattern is a regular expression "
                    "in which '*' matches anything and '.' is a dot)",
                    EXIT_USAGE,
                ) from None
    return listener


def _describe_filters(args: argparse.Namespace) -> str:
    parts = []
    if args.subject:
        parts.append("subject " + " or ".join(repr(s) for s in args.subject))
    if args.sender:
        parts.append("sender " + " or ".join(repr(s) for s in args.sender))
    return (" with " + " and ".join(parts)) if parts else ""
