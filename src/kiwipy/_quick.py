"""Quick sends of the thread facade: no task and no coroutine chain on the loop per send.

A core may offer a *lane* (``task_lane()``, see :class:`Lane`; the RabbitMQ core does:
:mod:`kiwipy.rmq.send._lane`). :func:`send` then encodes on the caller's thread, hands the
loop one callback that publishes, and wakes the caller from the confirm's own callback.
Whenever the lane cannot publish, or asks for it (:data:`RETRY`), the core's coroutine
(``task_send``) runs instead, so the caller always gets the outcome the core defines; only
the way there is shorter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable
from typing import Any, Callable, Optional, Protocol

from . import exceptions
from ._portal import LoopThread, thread_world

__all__ = (
    "BATCH_TIMEOUT_PER_TASK",
    "RETRY",
    "Lane",
    "send",
    "send_many",
    "send_slowly",
)

#: Seconds a thread facade's ``task_send_many``, ``rpc_send_many`` or
#: ``broadcast_send_many`` call may take per message, on top of a single send's bound.
BATCH_TIMEOUT_PER_TASK = 0.001


class _Retry(Exception):
    """The lane's publish failed in a way the core's own send deals with (it resends)."""


#: What a lane reports when the core's coroutine must send the message after all.
RETRY: BaseException = _Retry()

Done = Callable[[Optional[BaseException], Any], None]


class Lane(Protocol):
    """What a core's quick lane for tasks offers."""

    def encode(self, task: Any, no_reply: bool) -> Optional[bytes]:
        """The body (any thread), or ``None`` when the lane is not ready."""

    def start(self, body: bytes, no_reply: bool, done: Done) -> bool:
        """Publish (loop thread); ``done(error, value)`` follows. ``False``: not possible."""

    def prime(self) -> None:
        """Get ready after the core's own send (loop thread)."""


def send(
    portal: LoopThread,
    start: Callable[[Done], bool],
    fallback: Callable[[], Awaitable[Any]],
    prime: Callable[[], None],
    convert: Callable[[Any], Any],
    timeout: float,
) -> Any:
    """Publish with ``start(done)`` on the loop, or with ``fallback()`` when it cannot (or
    its *done* reports :data:`RETRY`); ``prime()`` follows a fallback.

    :returns: the send's value passed through *convert* (on the loop thread).
    :raises TimeoutError: after *timeout* seconds (the fallback, if running, is cancelled).
    """
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()
    loop = portal.loop
    running: list[asyncio.Task[Any]] = []
    gave_up: list[bool] = []

    def finish(error: Optional[BaseException], value: Any) -> None:
        if error is RETRY:
            slow()
        elif error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(convert(value))

    def slow() -> None:
        if gave_up:
            return
        task = loop.create_task(_fallback(fallback, prime))
        running.append(task)
        task.add_done_callback(lambda done: _copy(done, outcome, convert))

    def begin() -> None:
        try:
            started = start(finish)
        except BaseException as exc:
            outcome.set_exception(exc)
            return
        if not started:
            slow()

    loop.call_soon_threadsafe(begin)
    try:
        return outcome.result(timeout)
    except concurrent.futures.TimeoutError:
        loop.call_soon_threadsafe(_give_up, running, gave_up)
        name = getattr(fallback, "__qualname__", None) or getattr(
            getattr(fallback, "func", None), "__qualname__", "send"
        )
        raise exceptions.TimeoutError(f"{name} after {timeout} seconds") from None


def _give_up(running: list[asyncio.Task[Any]], gave_up: list[bool]) -> None:
    gave_up.append(True)
    for task in running:
        task.cancel()


async def send_slowly(fallback: Callable[[], Awaitable[Any]], prime: Callable[[], None]) -> Any:
    """The core's own send, after which the lane gets ready (first sends declare queues)."""
    return await _fallback(fallback, prime)


async def _fallback(fallback: Callable[[], Awaitable[Any]], prime: Callable[[], None]) -> Any:
    try:
        return await fallback()
    finally:
        prime()


def _copy(
    done: asyncio.Task[Any],
    outcome: concurrent.futures.Future[Any],
    convert: Callable[[Any], Any],
) -> None:
    if done.cancelled():
        outcome.cancel()
    elif done.exception() is not None:
        outcome.set_exception(done.exception())
    else:
        outcome.set_result(convert(done.result()))


async def send_many(
    send_many: Callable[..., Awaitable[Optional[list[Any]]]],
    items: list[Any],
    *args: Any,
    timeout: Optional[float] = None,
) -> list[Any]:
    """Run a core's ``task_send_many``, ``rpc_send_many`` or ``broadcast_send_many`` (within
    *timeout* seconds, which the core enforces itself) and give its futures (also those of a
    :class:`~kiwipy.BatchSendError`) to the thread world, on the loop thread.

    :returns: the futures (none for ``broadcast_send_many``, which returns ``None``).
    """
    try:
        futures = await send_many(items, *args, timeout=timeout)
    except exceptions.BatchSendError as exc:
        exc.futures = [thread_world(future) for future in exc.futures]
        raise
    return [thread_world(future) for future in futures or ()]
