"""A private event loop running on its own thread, and futures that cross threads.

Rules that keep the thread facade deadlock-free:

1. The loop thread never blocks: :meth:`LoopThread.call` refuses to run on it (it would wait
   for itself) and raises :class:`RuntimeError` instead.
2. Futures cross the thread boundary only through :func:`to_concurrent` (or
   :func:`follow`) and :func:`to_asyncio`, which convert nested futures level by level, so a future resolving to a
   future stays a future of the caller's world all the way down.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable
from typing import Any, Callable, TypeVar

from . import exceptions
from ._raised import original, set_exception

T = TypeVar("T")

__all__ = (
    "LOOP_ENV",
    "LoopThread",
    "loop_choice",
    "new_loop",
    "thread_world",
    "to_asyncio",
    "follow",
    "to_concurrent",
)

#: Environment variable choosing the private loop's implementation: ``uvloop`` (the default
#: when it is importable: ``pip install 'kiwipy[uvloop]'``) or ``asyncio``.
LOOP_ENV = "KIWIPY_EVENT_LOOP"


def loop_choice() -> str:
    """:returns: what :data:`LOOP_ENV` asks for: ``'uvloop'``, ``'asyncio'`` or ``''`` (unset:
    uvloop where installed).

    :raises ValueError: when it names neither.
    """
    choice = os.environ.get(LOOP_ENV, "").strip().lower()
    if choice not in ("", "uvloop", "asyncio"):
        raise ValueError(f"{LOOP_ENV}={choice!r}: expected 'uvloop' or 'asyncio'")
    return choice


def new_loop() -> asyncio.AbstractEventLoop:
    """:returns: a new event loop for a thread facade: uvloop's where it is installed (unless
    :data:`LOOP_ENV` says ``asyncio``), else asyncio's own.

    :raises ValueError: when :data:`LOOP_ENV` names neither, or asks for uvloop and it is not
        installed.
    """
    choice = loop_choice()
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ValueError(
                    f"{LOOP_ENV}=uvloop but uvloop is not installed (pip install 'kiwipy[uvloop]')"
                ) from None
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


class LoopThread:
    """An asyncio event loop running forever on a daemon thread."""

    def __init__(self, name: str = "kiwipy communicator") -> None:
        self._loop = new_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Schedule *coro* on the loop; cancelling the returned future cancels it."""
        return asyncio.run_coroutine_threadsafe(_as_coroutine(coro), self._loop)

    def call(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        timeout: float | None,
        convert: Callable[[Any], T] | None = None,
    ) -> Any:
        """Run ``fn(*args)`` on the loop and wait for its result (passed through *convert*
        on the loop thread, where asyncio futures may be touched without a thread hop).

        :raises RuntimeError: when called from the loop thread itself (it would deadlock).
        :raises TimeoutError: if it takes longer than *timeout* seconds; the call is then
            cancelled on the loop.
        """
        if self.in_loop_thread():
            raise RuntimeError(
                "a blocking kiwipy call was made from the communicator's own event loop thread; "
                "it would deadlock. Call it from another thread, or use the asyncio API."
            )
        future = asyncio.run_coroutine_threadsafe(_call(fn, args, convert), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            name = getattr(fn, "__qualname__", repr(fn))
            raise exceptions.TimeoutError(f"{name} after {timeout} seconds") from None

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what still runs on the loop, stop it, join the thread and close the loop."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive() and not self.in_loop_thread():
            try:
                self.submit(_cancel_other_tasks()).result(timeout)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _call(
    fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], convert: Callable[[Any], Any] | None
) -> Any:
    result = await fn(*args)
    return result if convert is None else convert(result)


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def thread_world(value: Any) -> Any:
    """:returns: *value*, or a thread-world future following it if it is an asyncio future
    (call on the future's loop thread, where no hop is needed)."""
    return to_concurrent(value) if isinstance(value, asyncio.Future) else value


def to_concurrent(source: asyncio.Future[Any]) -> concurrent.futures.Future[Any]:
    """:returns: a thread-world future following the asyncio future *source* (which must
    belong to a running loop). Nested asyncio futures in the result are converted too, and
    cancelling the returned future cancels *source*."""
    return follow(source, concurrent.futures.Future())


def follow(
    source: asyncio.Future[Any], target: concurrent.futures.Future[Any]
) -> concurrent.futures.Future[Any]:
    """Make the thread-world *target* (possibly already handed out, even cancelled) follow
    the asyncio future *source*, as :func:`to_concurrent` does. :returns: *target*."""
    loop = source.get_loop()

    def copy(done: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
            target.set_running_or_notify_cancel()
        elif done.exception() is not None:
            target.set_exception(original(done.exception()))  # type: ignore[arg-type]
        else:
            result = done.result()
            target.set_result(to_concurrent(result) if asyncio.isfuture(result) else result)

    def cancel_source(done: concurrent.futures.Future[Any]) -> None:
        if done.cancelled() and not loop.is_closed():
            loop.call_soon_threadsafe(source.cancel)

    # asyncio futures are not thread-safe: from another thread (the facade converts results on
    # the caller's thread), a callback added while *source* completes could be lost, or be
    # scheduled with a plain call_soon that never wakes the loop.
    if _running_loop() is loop:
        source.add_done_callback(copy)
    else:
        loop.call_soon_threadsafe(source.add_done_callback, copy)
    target.add_done_callback(cancel_source)
    return target


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def to_asyncio(
    source: concurrent.futures.Future[Any], loop: asyncio.AbstractEventLoop
) -> asyncio.Future[Any]:
    """:returns: an asyncio future on *loop* following the thread-world *source*; nested
    concurrent futures in the result are converted too. Must be called on *loop*'s thread."""
    target: asyncio.Future[Any] = loop.create_future()

    def copy(done: concurrent.futures.Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif done.exception() is not None:
            set_exception(target, done.exception())  # type: ignore[arg-type]
        else:
            result = done.result()
            if isinstance(result, concurrent.futures.Future):
                result = to_asyncio(result, loop)
            target.set_result(result)

    def copy_threadsafe(done: concurrent.futures.Future[Any]) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(copy, done)

    source.add_done_callback(copy_threadsafe)
    return target
