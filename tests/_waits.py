"""Waiting, in a test's own thread, for something to happen; holding a loop thread busy."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable

__all__ = ("block_loop", "wait_until")


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


def block_loop(loop: asyncio.AbstractEventLoop, bound: float) -> threading.Event:
    """Keep *loop*'s thread busy until the returned event is set (by the test; released on
    its own after ``3 * bound`` seconds at most).

    :raises AssertionError: if the loop did not start the hold within *bound* seconds.
    """
    release, blocked = threading.Event(), threading.Event()

    def hold() -> None:
        blocked.set()
        release.wait(3 * bound)

    loop.call_soon_threadsafe(hold)
    assert blocked.wait(bound), f"the loop was not held within {bound:g} s"
    return release
