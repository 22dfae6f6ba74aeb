"""Subscriber outcomes as kiwipy 0.9 replies (the outcome itself: :mod:`kiwipy._outcome`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from ..._outcome import CANCELLED, EXCEPTION, REJECTED, RESULT, Outcome, invoke, outcome_of
from ..._replies import outcome_response as to_response

__all__ = (
    "CANCELLED",
    "EXCEPTION",
    "REJECTED",
    "RESULT",
    "Outcome",
    "invoke",
    "outcome_of",
    "to_response",
    "tracked",
)


@contextlib.contextmanager
def tracked(handlers: set[asyncio.Task[Any]]) -> Iterator[None]:
    """Keep the current task in *handlers* while a message is handled (so closing can wait
    briefly for messages already received)."""
    task = asyncio.current_task()
    if task is not None:
        handlers.add(task)
    try:
        yield
    finally:
        if task is not None:
            handlers.discard(task)
