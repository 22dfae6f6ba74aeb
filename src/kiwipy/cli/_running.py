"""How the long-running commands (``worker``, ``serve``, ``listen``) run and stop.

* :class:`Tally` counts messages across the subscriber threads: taken, running, handled,
  failed, and the tasks the library parked in ``<queue>.dead`` (:class:`LibraryLog`).
* The first SIGINT/SIGTERM sets :attr:`Tally.stop`: the command stops taking messages and
  *drains* (:func:`drain`): the running ones get the grace period to finish and reply; those
  still running after it are handed back (tasks: closing the connection returns their
  deliveries to the queue, so another worker runs them). A second signal sets
  :attr:`Tally.force`: stop at once.
* Library warnings and errors (a task parked as undecodable, a channel closed by the broker)
  are shown on stderr, one line each, prefixed with the command.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from ._common import err, format_value

__all__ = ("LibraryLog", "Tally", "drain", "preview", "stop_on_signals", "wait_until_stopped")

_TICK = 0.1
_PROGRESS_INTERVAL = 1.0
#: Seconds after the last message finished before closing, so its reply (sent by the
#: communicator after the subscriber returned) is not cut off.
_DRAIN = 0.3
#: Characters of a message body ``-v`` shows.
PREVIEW_CHARS = 200


def preview(value: Any) -> str:
    """:returns: *value* as JSON, cut to :data:`PREVIEW_CHARS` characters with its full size
    appended when longer (so ``-v`` never writes a 20 MB line for a 20 MB task)."""
    text = format_value(value)
    if len(text) <= PREVIEW_CHARS:
        return text
    return f"{text[:PREVIEW_CHARS]}... ({len(text):,} characters)"


class Tally:
    """Counts messages across subscriber threads and stops the run at ``--max-messages``."""

    def __init__(self, noun: str, limit: int | None) -> None:
        self.noun = noun
        self.limit = limit
        self.stop = threading.Event()
        self.force = threading.Event()
        self.started = time.monotonic()
        self.claimed = 0
        self.handled = 0
        self.failed = 0
        self.parked: dict[str, int] = {}
        self.last_done = 0.0
        self.lock = threading.Lock()

    def claim(self) -> bool:
        """:returns: ``False`` when stopping, or once ``--max-messages`` messages were taken."""
        with self.lock:
            if self.stop.is_set() or (self.limit is not None and self.claimed >= self.limit):
                return False
            self.claimed += 1
            return True

    def unclaim(self) -> None:
        """A claimed message is given back without running (the command is stopping)."""
        with self.lock:
            self.claimed -= 1

    @property
    def running(self) -> int:
        with self.lock:
            return self.claimed - self.handled

    def done(self, ok: bool) -> None:
        with self.lock:
            self.handled += 1
            self.failed += 0 if ok else 1
            self.last_done = time.monotonic()
            if self.limit is not None and self.handled >= self.limit:
                self.stop.set()

    def park(self, reason: str) -> None:
        with self.lock:
            self.parked[reason] = self.parked.get(reason, 0) + 1

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        failed = f" ({self.failed} failed)" if self.failed else ""
        plural = "" if self.handled == 1 else "s"
        parked = "".join(f", {n} parked as {reason}" for reason, n in sorted(self.parked.items()))
        rate = self.handled / elapsed
        return f"{self.handled} {self.noun}{plural} handled{failed}{parked}, {rate:.1f}/s"

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        return f"{self.line()} over {elapsed:.1f} s"


@contextlib.contextmanager
def stop_on_signals(tally: Tally) -> Iterator[None]:
    """Make the first SIGINT (Ctrl-C) or SIGTERM set ``tally.stop`` and the next one
    ``tally.force``, instead of killing the process. Installed before connecting, so a signal
    that arrives at any point stops the command cleanly."""

    def handle(_signum: int, _frame: Any) -> None:
        (tally.force if tally.stop.is_set() else tally.stop).set()

    restore: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            restore[signum] = signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in restore.items():
            signal.signal(signum, handler)


def wait_until_stopped(tally: Tally, label: str) -> None:
    """Block until stopped, showing progress at most once a second."""
    on_terminal = _stderr_is_terminal()
    shown: tuple[int, int] | None = None
    last = time.monotonic()
    try:
        while not tally.stop.wait(_TICK):
            now = time.monotonic()
            state = (tally.handled, sum(tally.parked.values()))
            if now - last < _PROGRESS_INTERVAL or (state == shown and not on_terminal):
                continue
            last, shown = now, state
            if on_terminal:
                err(f"\r{label}: {tally.line()}  ", end="")
            else:
                err(f"{label}: {tally.line()}")
    finally:
        if on_terminal and shown is not None:
            err("")


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def drain(tally: Tally, label: str, grace: float) -> int:
    """Wait up to *grace* seconds (or until a second signal) for the running messages to
    finish, then a moment for their replies to leave. :returns: how many still run."""
    running = tally.running
    if running and not tally.force.is_set():
        plural = "" if running == 1 else "s"
        err(
            f"{label}: stopping: no new {tally.noun}s; waiting up to {grace:g} s for {running} "
            f"running {tally.noun}{plural} to finish (signal again to stop at once)"
        )
        deadline = time.monotonic() + grace
        while tally.running and time.monotonic() < deadline:
            if tally.force.wait(min(_TICK, max(deadline - time.monotonic(), 0.0))):
                break
    if tally.handled and not tally.force.is_set():
        tally.force.wait(max(0.0, tally.last_done + _DRAIN - time.monotonic()))
    return tally.running


class LibraryLog(logging.Handler):
    """Shows the library's warnings and errors on stderr (``<label>: warning: ...``) and
    counts the tasks it parks in ``<queue>.dead`` (:meth:`Tally.park`).

    :param label: the command, ``kiwipy worker``.
    """

    def __init__(self, label: str, tally: Tally) -> None:
        super().__init__(logging.WARNING)
        self.label = label
        self.tally = tally

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted is still worth a line
            message = str(record.msg)
        # The record of kiwipy.rmq.receive._incoming's park(): (queue, queue, reason, error).
        if message.startswith("parking a task") and isinstance(record.args, tuple):
            self.tally.park(str(record.args[2]))
        elif message.startswith("task raised "):
            return  # the command logs the failure itself, with its traceback
        err(f"{self.label}: {record.levelname.lower()}: {message.splitlines()[0]}")

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Attach to the ``kiwipy`` logger for the ``with`` block."""
        logger = logging.getLogger("kiwipy")
        logger.addHandler(self)
        try:
            yield
        finally:
            logger.removeHandler(self)
