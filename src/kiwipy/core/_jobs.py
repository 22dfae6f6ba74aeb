"""The asyncio tasks ("jobs") a communicator of the shared core (:mod:`kiwipy.core`) runs
its subscribers' calls in, and how they stop when it closes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Optional

__all__ = ("Jobs",)

# The logger of the communicator these jobs belong to.
_LOGGER = logging.getLogger("kiwipy.core._communicator")

_CLOSE_TIMEOUT = 5.0  # seconds disconnect() waits for cancelled subscriber calls to unwind


class Jobs:
    """The running jobs of one communicator: a job that fails is logged, never lost.

    :param loop: returns the communicator's loop (raises ``RuntimeError`` before it has one).
    """

    def __init__(self, loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self._loop = loop
        self._jobs: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        """:returns: the job running *coro* on the communicator's loop.

        :raises RuntimeError: if there is no loop or it is closing (*coro* is closed)."""
        try:
            job = self._loop().create_task(coro)
        except RuntimeError:  # the loop is closing: the coroutine will never run
            coro.close()
            raise
        self._jobs.add(job)
        job.add_done_callback(self._job_done)
        return job

    async def cancel(self, current: Optional[asyncio.Task[Any]]) -> None:
        """Cancel every running job but *current*, and wait (a bounded time) for them to
        unwind."""
        jobs = [job for job in self._jobs if job is not current and not job.done()]
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.wait(jobs, timeout=_CLOSE_TIMEOUT)

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        if not job.cancelled() and job.exception() is not None:
            _LOGGER.error("kiwipy communicator job failed", exc_info=job.exception())
