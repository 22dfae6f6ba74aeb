"""The long-running subcommands: ``worker``, ``serve`` and ``listen``.

Each one subscribes, prints a ``ready`` line on stderr, then waits in the main thread until
Ctrl-C (SIGINT), SIGTERM or ``--max-messages`` stops it. Subscribers run on the
communicator's threads; they only count and print, under one lock. While waiting, a progress
line (messages handled, rate) is shown on stderr at most once a second: rewritten in place on
a terminal, one line per change otherwise. On the way out the subscriber is removed (no new
messages), the communicator closed, and a summary printed; the exit code is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import re
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

from . import exceptions
from ._cli_common import (
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
from .filters import BroadcastFilter

__all__ = ("cmd_listen", "cmd_serve", "cmd_worker")

_TICK = 0.1
_PROGRESS_INTERVAL = 1.0
_DRAIN = 0.3


class Tally:
    """Counts messages across subscriber threads and stops the run at ``--max-messages``."""

    def __init__(self, noun: str, limit: int | None, stop: threading.Event) -> None:
        self.noun = noun
        self.limit = limit
        self.stop = stop
        self.started = time.monotonic()
        self.claimed = 0
        self.handled = 0
        self.failed = 0
        self.last_done = 0.0
        self.lock = threading.Lock()

    def claim(self) -> bool:
        """:returns: ``False`` once ``--max-messages`` messages were taken."""
        with self.lock:
            if self.limit is not None and self.claimed >= self.limit:
                return False
            self.claimed += 1
            return True

    def done(self, ok: bool) -> None:
        with self.lock:
            self.handled += 1
            self.failed += 0 if ok else 1
            self.last_done = time.monotonic()
            if self.limit is not None and self.handled >= self.limit:
                self.stop.set()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        failed = f" ({self.failed} failed)" if self.failed else ""
        plural = "" if self.handled == 1 else "s"
        return f"{self.handled} {self.noun}{plural} handled{failed}, {self.handled / elapsed:.1f}/s"

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        return f"{self.line()} over {elapsed:.1f} s"


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Make SIGINT (Ctrl-C) and SIGTERM set *stop* instead of killing the process. Installed
    before connecting, so a signal that arrives at any point stops the command cleanly."""
    restore: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            restore[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        yield
    finally:
        for signum, handler in restore.items():
            signal.signal(signum, handler)


def _wait(tally: Tally, label: str) -> None:
    """Block until stopped, showing progress at most once a second."""
    on_terminal = _stderr_is_terminal()
    shown = -1
    last = time.monotonic()
    try:
        while not tally.stop.wait(_TICK):
            now = time.monotonic()
            if now - last < _PROGRESS_INTERVAL or (tally.handled == shown and not on_terminal):
                continue
            last, shown = now, tally.handled
            if on_terminal:
                err(f"\r{label}: {tally.line()}  ", end="")
            else:
                err(f"{label}: {tally.line()}")
    finally:
        if on_terminal and shown >= 0:
            err("")


def _stderr_is_terminal() -> bool:
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _call(func: Callable[..., Any], *args: Any) -> Any:
    """Call the user's function; run it to completion if it is a coroutine function."""
    result = func(*args)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _handler(
    args: argparse.Namespace, tally: Tally, func: Callable[..., Any], kind: str
) -> Callable[[Any, Any], Any]:
    """:returns: the subscriber that runs *func* on one message and counts the outcome."""

    def subscriber(communicator: Any, message: Any) -> Any:
        if not tally.claim():
            if kind == "task":
                raise exceptions.TaskRejected("this worker is stopping")
            raise RuntimeError("this server is stopping")
        call_args = (communicator, message) if args.with_communicator else (message,)
        try:
            result = _call(func, *call_args)
        except Exception as exc:
            if args.verbose:
                err(f"{kind} {format_value(message)} raised {type(exc).__name__}: {exc}")
            tally.done(ok=False)
            raise
        if args.verbose:
            err(f"{kind} {format_value(message)} -> {format_value(result)}")
        tally.done(ok=True)
        return result

    return subscriber


def _finish(label: str, tally: Tally, remove: Callable[[], None]) -> int:
    """Stop taking messages, let the last replies leave, and print the summary."""
    try:
        remove()
    except Exception:  # the communicator may already be gone; the summary still counts
        pass
    # A subscriber's reply is sent by the communicator after the subscriber returns; closing
    # at once could cancel it (and a task would be redelivered). Give it a moment.
    if tally.handled:
        time.sleep(max(0.0, tally.last_done + _DRAIN - time.monotonic()))
    unfinished = tally.claimed - tally.handled
    fate = "handed back to the queue" if tally.noun == "task" else "abandoned"
    back = f"; {unfinished} unfinished, {fate}" if unfinished else ""
    err(f"{label}: stopped; {tally.summary()}{back}")
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    """``kiwipy worker module:function``: consume tasks with a Python callable."""
    func = load_callable(args.callable)
    tally = Tally("task", args.max_messages, threading.Event())
    with _stop_on_signals(tally.stop), connect_from_args(args) as communicator:
        identifier = communicator.add_task_subscriber(_handler(args, tally, func, "task"))
        prefetch = f", prefetch {args.prefetch}" if args.prefetch else ""
        err(
            f"kiwipy worker: ready: {args.callable} takes tasks from queue "
            f"{queue_name(args)!r} at {mask_url(args.url)}{prefetch} (Ctrl-C to stop)"
        )
        _wait(tally, "kiwipy worker")
        return _finish(
            "kiwipy worker", tally, lambda: communicator.remove_task_subscriber(identifier)
        )


def cmd_serve(args: argparse.Namespace) -> int:
    """``kiwipy serve IDENTIFIER module:function``: answer RPCs with a Python callable."""
    func = load_callable(args.callable)
    tally = Tally("call", args.max_messages, threading.Event())
    with _stop_on_signals(tally.stop), connect_from_args(args) as communicator:
        try:
            communicator.add_rpc_subscriber(_handler(args, tally, func, "call"), args.identifier)
        except exceptions.DuplicateSubscriberIdentifier:
            raise CliError(f"someone already answers RPCs as {args.identifier!r}") from None
        err(
            f"kiwipy serve: ready: {args.callable} answers RPCs to {args.identifier!r} "
            f"at {mask_url(args.url)} (Ctrl-C to stop)"
        )
        _wait(tally, "kiwipy serve")
        return _finish(
            "kiwipy serve", tally, lambda: communicator.remove_rpc_subscriber(args.identifier)
        )


def cmd_listen(args: argparse.Namespace) -> int:
    """``kiwipy listen``: print broadcasts as they arrive, optionally filtered."""
    tally = Tally("broadcast", args.max_messages, threading.Event())
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
    with _stop_on_signals(tally.stop), connect_from_args(args) as communicator:
        identifier = communicator.add_broadcast_subscriber(listener)
        filters = _describe_filters(args)
        err(
            f"kiwipy listen: ready: listening for broadcasts{filters} at {mask_url(args.url)} "
            "(Ctrl-C to stop)"
        )
        _wait(tally, "kiwipy listen")
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
