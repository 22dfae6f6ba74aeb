"""Worker threads for the thread facade's subscribers, with batched wake-ups of the loop.

``loop.run_in_executor`` costs a ``concurrent.futures.Future``, a chained asyncio future and
one ``call_soon_threadsafe`` (a write to the loop's self-pipe, a system call and a wake-up)
per call. :class:`Dispatcher` keeps the same model (up to *max_workers* threads, calls run
concurrently, each resolves an asyncio future on the loop) with less per call:

* jobs go to the workers through a :class:`queue.SimpleQueue`, and a thread is started
  only when none is idle (up to *max_workers*, the same default as ``ThreadPoolExecutor``);
* finished calls are appended to a deque, and the loop is woken once for all of the calls
  that finished before it got round to them (:meth:`Dispatcher._drain`).
* calls that must run one after the other (one RPC or broadcast subscriber's) are queued
  per key with :meth:`Dispatcher.run_serial`; one worker runs a key's queue until it is
  empty, so a burst costs one hand-over, not one round trip through the loop per call.
* :meth:`Dispatcher.submit_serial` queues such a call from any thread, with a callback the
  worker runs with its outcome instead of a future of the loop: a broadcast handed to a
  subscriber that way never crosses the loop thread (:mod:`kiwipy._broadcasts`).

Everything a call raises (``BaseException`` included) is set on its future, as an executor
does (what an asyncio future cannot carry is wrapped by :func:`kiwipy._raised.set_exception`).
Workers are daemon threads: like the communicator's own loop thread, they do not keep the
interpreter alive.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import queue
import threading
from typing import Any, Callable, Optional

from ._raised import set_exception

_LOGGER = logging.getLogger(__name__)

__all__ = ("OFFLOADED", "SUBMIT", "Dispatcher", "Done", "default_workers")

#: Attribute set (true) on a subscriber wrapper whose awaitable does nothing but wait for a
#: :class:`Dispatcher` call: the core may await it without a task of its own (what it
#: raises is what the user's code raised, or the cancellation of the awaiting task).
OFFLOADED = "kiwipy_offloaded"
#: Attribute of a subscriber wrapper (the thread facade's, for a subscriber whose calls run
#: one after the other) holding ``submit(args, done)``: queue the call with *args* (the
#: communicator left out) from any thread; ``done(ok, value)`` runs on the worker after it.
SUBMIT = "kiwipy_submit"

#: ``done(ok, value)``: a call returned *value* (*ok*) or raised it.
Done = Callable[[bool, Any], None]
#: A serial call: the loop's future for it, or the callback that takes its outcome.
_Call = tuple[Optional[asyncio.Future[Any]], Callable[[], Any], Optional[Done]]
#: A call and its future; without a future, work of the dispatcher's own (a serial queue).
_Job = tuple[Optional[asyncio.Future[Any]], Callable[[], Any]]


def default_workers() -> int:
    """:returns: ``ThreadPoolExecutor``'s default number of threads."""
    return min(32, (os.cpu_count() or 1) + 4)


class Dispatcher:
    """Runs calls on worker threads for one event loop (see the module doc).

    :param loop: the loop whose futures the calls resolve.
    :param name: prefix of the worker threads' names.
    :param max_workers: most threads at once.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, name: str, max_workers: Optional[int] = None
    ) -> None:
        self._loop = loop
        self._name = name
        self._max = max_workers or default_workers()
        self._jobs: queue.SimpleQueue[Optional[_Job]] = queue.SimpleQueue()
        self._done: collections.deque[tuple[asyncio.Future[Any], bool, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._scheduled = False
        self._closed = False
        self._serial: dict[Any, collections.deque[_Call]] = {}
        self._draining: set[Any] = set()
        self._workers: set[int] = set()  # thread idents

    def run(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        """:returns: a future (of the loop) for ``call()`` run on a worker thread. Call it
        on the loop's thread."""
        future = self._loop.create_future()
        self._start(future, call)
        return future

    def _start(self, future: Optional[asyncio.Future[Any]], call: Callable[[], Any]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1  # that idle worker will take it
                spawn = False
            else:
                spawn = not self._closed and self._threads < self._max
                self._threads += spawn
        self._jobs.put((future, call))
        if spawn:
            name = f"{self._name}_{self._threads - 1}"
            threading.Thread(target=self._work, name=name, daemon=True).start()

    def run_serial(self, key: Any, call: Callable[[], Any]) -> asyncio.Future[Any]:
        """:meth:`run`, but calls with the same *key* run one after the other, in the order
        they were queued: one worker takes the key's queue and runs what it finds there
        (call on the loop's thread)."""
        future = self._loop.create_future()
        self._queue_serial(key, (future, call, None))
        return future

    def submit_serial(self, key: Any, call: Callable[[], Any], done: Done) -> None:
        """:meth:`run_serial` from any thread, without a future: ``done(ok, value)`` runs
        on the worker once ``call()`` returned *value* or raised it (what ``done`` raises is
        logged)."""
        self._queue_serial(key, (None, call, done))

    def _queue_serial(self, key: Any, job: _Call) -> None:
        with self._lock:
            self._serial.setdefault(key, collections.deque()).append(job)
            if key in self._draining:
                return
            self._draining.add(key)
        self._start(None, functools.partial(self._drain_serial, key))

    def _drain_serial(self, key: Any) -> None:
        while True:
            with self._lock:
                queue = self._serial[key]
                if not queue:
                    self._draining.discard(key)
                    del self._serial[key]
                    return
                future, call, done = queue.popleft()
            ok, value = _call(call)
            if done is not None:
                _report(done, ok, value)
            elif future is not None:
                self._finished((future, ok, value))
            del future, call, done, value

    def in_worker(self) -> bool:
        """:returns: whether the caller runs on one of this dispatcher's workers (a
        subscriber's call)."""
        return threading.get_ident() in self._workers

    def close(self) -> None:
        """Let the workers finish their current call and exit (without waiting for them)."""
        with self._lock:
            self._closed = True
            threads = self._threads
        for _ in range(threads):
            self._jobs.put(None)

    def _work(self) -> None:
        self._workers.add(threading.get_ident())
        try:
            self._serve()
        finally:
            self._workers.discard(threading.get_ident())

    def _serve(self) -> None:
        reserved = True  # started for a job that is already queued
        while True:
            if not reserved:
                with self._lock:
                    self._idle += 1
            reserved = False
            job = self._jobs.get()  # whoever queued it took this worker off the idle count
            if job is None:
                return
            future, call = job
            del job
            if future is None:
                call()  # a serial queue: it reports each of its calls itself
            else:
                self._finished((future, *_call(call)))
            del future, call

    def _finished(self, outcome: tuple[asyncio.Future[Any], bool, Any]) -> None:
        self._done.append(outcome)
        if self._scheduled:
            return  # the wake-up already scheduled will see it (it clears the flag first)
        self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody waits any more
            self._done.clear()

    def _drain(self) -> None:
        self._scheduled = False
        done = self._done
        while done:
            future, ok, value = done.popleft()
            if future.done():
                continue  # cancelled meanwhile
            if ok:
                future.set_result(value)
            else:
                set_exception(future, value)


def _call(call: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return (True, call())
    except BaseException as exc:  # as an executor does: the caller decides
        return (False, exc)


def _report(done: Done, ok: bool, value: Any) -> None:
    try:
        done(ok, value)
    except Exception:  # a worker must go on with the calls queued after this one
        _LOGGER.exception("kiwipy: reporting a subscriber's outcome failed")
