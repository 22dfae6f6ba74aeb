"""Subscriber outcomes as kiwipy 0.9 replies (the outcome itself: :mod:`kiwipy._outcome`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from .._outcome import CANCELLED, EXCEPTION, REJECTED, RESULT, Outcome, invoke, outcome_of
from . import protocol

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


def to_response(outcome: Outcome) -> dict[str, Any]:
    """:returns: the kiwipy 0.9 reply body for a final *outcome*."""
    if outcome.kind == RESULT:
        return protocol.result_response(outcome.value)
    if outcome.kind == CANCELLED:
        return protocol.cancelled_response(str(outcome.value))
    return protocol.exception_response(outcome.value)


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
