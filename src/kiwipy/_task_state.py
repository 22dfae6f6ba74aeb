"""The states of a task taken in pull mode, and the one check every transport makes.

``state`` goes ``pending`` → ``processing`` → ``finished``, or to ``requeued`` when given
back. A call the state does not allow raises :class:`kiwipy.InvalidStateError`, which is
also the :class:`asyncio.InvalidStateError` kiwipy 0.9 raised, on every transport.
"""

from __future__ import annotations

from . import exceptions

__all__ = ("TASK_FINISHED", "TASK_PENDING", "TASK_PROCESSING", "TASK_REQUEUED", "expect_state")

TASK_PENDING = "pending"
TASK_PROCESSING = "processing"
TASK_FINISHED = "finished"
TASK_REQUEUED = "requeued"


def expect_state(state: str, action: str, *allowed: str) -> None:
    """:raises InvalidStateError: unless *state* is one of *allowed* (*action* says what was
    attempted, e.g. ``"process"``)."""
    if state not in allowed:
        raise exceptions.InvalidStateError(f"cannot {action} a task that is {state}")
