"""Subscribers that act out a :class:`~tests._battery_inputs.Behaviour` for the hostile
battery (``tests/contract_battery.py``)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from tests._battery_inputs import FUTURE_FAILS, FUTURE_RESULT, HANG, RAISE, RETURN, Behaviour

__all__ = ("Gate", "Stage")

#: Longest a hanging subscriber waits for its release (the test releases it long before).
HANG_LIMIT = 30.0


class Gate:
    """Holds hanging subscribers (in any thread, or on any loop) until :meth:`release`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def wait(self) -> None:
        self._open.wait(HANG_LIMIT)

    async def wait_async(self) -> None:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._open.is_set():
                return
            self._waiters.append((loop, opened))
        await asyncio.wait({opened}, timeout=HANG_LIMIT)

    def release(self) -> None:
        with self._lock:
            self._open.set()
            waiters, self._waiters = self._waiters, []
        for loop, opened in waiters:
            try:
                loop.call_soon_threadsafe(_open_future, opened)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass


def _open_future(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Stage:
    """One example's subscriber: acts out *behaviour*, and tells the test what it did, so the
    test can complete a returned future late or release a hanging call.

    :param make_future: the transport's future factory (asyncio or concurrent).
    :param record: called (from any thread) with ``('called', None)`` when the subscriber
        is called, then ``('returned', future)`` when it returns a future.
    """

    def __init__(
        self,
        behaviour: Behaviour,
        make_future: Callable[[], Any],
        record: Callable[[tuple[str, Any]], None],
    ) -> None:
        self.behaviour = behaviour
        self.gate = Gate()
        self._make_future = make_future
        self._record = record

    def subscriber(self) -> Callable[..., Any]:
        """:returns: the subscriber, a coroutine function or not as the behaviour says."""
        if self.behaviour.coroutine:

            async def acting(_comm: Any, *_args: Any) -> Any:
                await asyncio.sleep(0)
                self._record(("called", None))
                if self.behaviour.action == HANG:
                    await self.gate.wait_async()
                    return "released"
                return self._act()

            return acting

        def act(_comm: Any, *_args: Any) -> Any:
            self._record(("called", None))
            if self.behaviour.action == HANG:
                self.gate.wait()
                return "released"
            return self._act()

        return act

    def _act(self) -> Any:
        behaviour = self.behaviour
        if behaviour.action == RETURN:
            assert behaviour.value is not None
            return behaviour.value.make()
        if behaviour.action == RAISE:
            assert behaviour.error is not None
            raise behaviour.error("raised by the battery")
        future = self._make_future()
        if not behaviour.late:
            self._complete(future)
        self._record(("returned", future))
        return future

    def complete_late(self, future: Any) -> None:
        """Complete *future* (returned by the subscriber) as the behaviour says."""
        if self.behaviour.late:
            self._complete(future)

    def _complete(self, future: Any) -> None:
        behaviour = self.behaviour
        if behaviour.action == FUTURE_RESULT:
            assert behaviour.value is not None
            future.set_result(behaviour.value.make())
        elif behaviour.action == FUTURE_FAILS:
            assert behaviour.error is not None
            future.set_exception(behaviour.error("set on the future by the battery"))
        else:
            future.cancel()
