"""Waiting, in a test's own thread, for something to happen."""

from __future__ import annotations

import time
from typing import Callable

__all__ = ("wait_until",)


def wait_until(condition: Callable[[], bool], what: str, bound: float) -> float:
    """Wait until *condition* holds, looking every 10 ms.

    :returns: the seconds it took.
    :raises AssertionError: naming *what*, once *bound* seconds have passed without it.
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > bound:
            raise AssertionError(f"not within {bound:g} s: {what}")
        time.sleep(0.01)  # the polling period, not a wait for the event
    return time.monotonic() - start
