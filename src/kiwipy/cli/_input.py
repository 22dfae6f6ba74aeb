"""Checking command-line input before it is used.

Every number an option takes is checked by its argparse ``type`` (:func:`whole`,
:func:`seconds`), so a value that cannot work (``--prefetch -3``, ``--max-messages 0``,
``--timeout -1``) is a usage error naming the option, before anything connects. Usage errors
are one line (:class:`OneLineParser`), like every other error of the command line.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable, NoReturn, Optional

from .._dispatch import default_workers

__all__ = (
    "DEFAULT_GRACE",
    "OneLineParser",
    "default_concurrency",
    "max_concurrency",
    "seconds",
    "whole",
)

_EXIT_USAGE = 2

#: Seconds ``worker`` and ``serve`` let running messages finish after Ctrl-C or SIGTERM.
DEFAULT_GRACE = 30.0


def max_concurrency() -> int:
    """:returns: the most tasks a worker can run at once: the thread communicator's
    subscriber threads (``ThreadPoolExecutor``'s default count)."""
    return default_workers()


def default_concurrency() -> int:
    """:returns: the CPU count (bounded by :func:`max_concurrency`)."""
    return min(os.cpu_count() or 1, max_concurrency())


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (``kiwipy send: error:
    ...``) pointing at ``--help``, instead of the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(_EXIT_USAGE, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def whole(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """:returns: an argparse type accepting a whole number from *low* to *high* (inclusive;
    ``None``: no upper bound)."""
    above = f"a whole number, {low} or more"
    expected = f"a whole number from {low} to {high}" if high is not None else above

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is not {expected}")
        return value

    parse.__name__ = "whole number"  # argparse names the type in some messages
    return parse


def seconds(allow_zero: bool) -> Callable[[str], float]:
    """:returns: an argparse type accepting a finite number of seconds, above zero (or zero
    too, with *allow_zero*)."""
    expected = "a number of seconds, 0 or more" if allow_zero else "a number of seconds above 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{text} is not {expected}")
        return value

    parse.__name__ = "seconds"
    return parse
