"""The behaviour every kiwipy communicator must have, written once as a test suite.

How a transport plugs in
========================

In a test module, subclass :class:`CommunicatorContract`, set ``capabilities`` and define an
async, function-scoped ``transport`` fixture that yields an :class:`AsyncTransport` (for an
asyncio communicator) or a :class:`BlockingTransport` (for a blocking ``kiwipy.Communicator``).
Example for RabbitMQ (``unique_name`` comes from ``tests/conftest.py``)::

    import kiwipy.rmq
    import pytest

    from tests.contract import ALL, AsyncTransport, BlockingTransport, CommunicatorContract

    def rmq_options(name):
        return dict(message_exchange=f"{name}.messages", task_exchange=f"{name}.tasks",
                    task_queue=f"{name}.tasks", testing_mode=True)

    class TestRmqCommunicator(CommunicatorContract):
        capabilities = ALL

        @pytest.fixture
        async def transport(self, unique_name, rmq_uri):
            async def factory():  # awaited on the test's event loop
                return await kiwipy.rmq.async_connect(rmq_uri, **rmq_options(unique_name))

            async with AsyncTransport(factory, namespace=unique_name) as transport:
                yield transport

    class TestRmqThreadCommunicator(CommunicatorContract):
        capabilities = ALL

        @pytest.fixture
        async def transport(self, unique_name, rmq_uri):
            def factory():  # called in a worker thread, never on the test's loop
                return kiwipy.rmq.connect(rmq_uri, **rmq_options(unique_name))

            async with BlockingTransport(factory, namespace=unique_name) as transport:
                yield transport

The memory transport plugs in the same way (``tests/unit/test_contract_memory.py``): its
factory is ``lambda: kiwipy.memory.async_connect(f"memory://{unique_name}")``.

Rules the fixture must follow:

* **Running.** ``tests`` is a package, so import the suite as ``tests.contract`` and run pytest
  from the repository root. The tests are coroutines (pytest-asyncio, ``asyncio_mode =
  "auto"``); the fixture runs on the same event loop as the test. ``unique_name`` (defined in
  ``tests/conftest.py``) is ``kiwipy-test-<test name>-<8 hex digits>``, letters, digits and
  dashes only.
* **Isolation.** Every ``factory()`` call returns a new, connected communicator. All the
  communicators of one transport share one namespace: they see each other's default task
  queue, named task queues, RPC identifiers and broadcasts. Nothing is shared between tests:
  build the namespace from ``unique_name`` (memory: the broker name ``memory://<unique_name>``;
  RabbitMQ: exchange and default task-queue names, as above). ``namespace`` must be usable
  inside queue names and RPC identifiers: the suite names every extra task queue and every
  RPC identifier ``transport.name(suffix)``, i.e. ``f"{namespace}.{suffix}"``.
* **Async factory** (:class:`AsyncTransport`): a coroutine function returning an
  ``kiwipy.AsyncCommunicator`` (coroutine methods returning ``asyncio.Future`` objects,
  ``disconnect()``, ``connected()``, ``task_queue(name)`` giving a
  ``kiwipy.communications.AsyncTaskQueue``). Its subscribers run on the test's loop, and
  :meth:`ContractTransport.make_future` gives ``loop.create_future()``.
* **Blocking factory** (:class:`BlockingTransport`): a plain function returning a
  ``kiwipy.Communicator`` (``close()``, ``is_closed()``; ``task_queue(name)`` giving a thread
  task queue with ``task_send``, ``add_task_subscriber``, ``remove_task_subscriber``,
  ``next_task(timeout=, fail=)`` context manager and iteration). Every blocking call is run in
  a worker thread (``asyncio.to_thread``), so the real blocking API is exercised from a thread
  that is not the test's loop; the ``concurrent.futures.Future`` objects it returns are wrapped
  into asyncio futures level by level. :meth:`~ContractTransport.make_future` gives a
  ``concurrent.futures.Future``.
* **Cleanup.** ``async with`` closes every communicator the transport made, including those a
  test closed already (closing twice must be harmless).

``capabilities`` is a frozenset of the flags below; a test that needs a flag the class lacks
is replaced, when the class is defined, by one that pytest skips with the missing flags as
its reason (``-ra`` lists them in the summary). Such a skip is legitimate, not a missing
prerequisite: it is a skip under ``CI=true`` too (unlike :func:`tests._ci.require`).

* :data:`QUEUES` - durable task queues: a task waits until a subscriber is added; named
  ``task_queue(name)``; pull mode (``next_task``, iteration, ``requeue``, ``processing``);
  futures still waiting for a reply fail with ``CommunicatorClosed`` on close.
* :data:`SHARED` - several communicators on one broker: load sharing, a task rejected by one
  worker goes to another, unfinished tasks of a closed communicator go to another, RPC
  identifiers are unique across communicators and released on close, broadcasts reach every
  communicator.
* :data:`AWAITS` - coroutine functions and objects with ``async def __call__`` are valid
  subscribers and are awaited.
* :data:`ISOLATES` - a subscriber raising any ``BaseException`` (``SystemExit``,
  ``KeyboardInterrupt``, ``asyncio.CancelledError``, ``StopIteration``, ``GeneratorExit``,
  one whose ``str()`` fails), or returning a future that fails with one, is reported to the
  sender as ``RemoteException`` naming it, and the next message is still processed; a raising
  broadcast subscriber does not stop the others.
* :data:`ENCODES` - every message goes through an encoder: an unencodable task, RPC message or
  broadcast raises ``EncodeError`` from the send (and nothing else is lost), an unencodable
  result reaches the requester as ``RemoteException``.
* :data:`BATCHES` - ``rpc_send_many``: one future per call, in order; a call to an unknown
  recipient fails alone, reported with the others' futures in ``BatchSendError``.
  ``broadcast_send_many``: every broadcast heard in order by every (filtered) subscriber; a
  malformed item (``TypeError``) or an unencodable body sends nothing.
* :data:`NAMES` - the naming rules every transport shares (``kiwipy._limits``,
  ``docs/guarantees.md``): a bad RPC identifier (too long in UTF-8 bytes, empty, an AMQP
  wildcard word) or task queue name (empty, too long, ``amq.``, not a ``str``) raises
  ``kiwipy.InvalidName`` at once from the call given it, and the communicator goes on
  working (a control task and RPC succeed within :data:`CONTROL_TIMEOUT` seconds); names
  at the limits work.
* :data:`DEADLINES` - ``timeout`` on ``rpc_send`` and ``task_send`` (issue 16,
  ``tests/contract_deadlines.py``): ``DeadlineExceeded`` in time, an expired request never
  started, an expired task dead-lettered (the transport's ``dead_letters`` reader shows it),
  a handler sees ``kiwipy.deadline()``, a coroutine handler is cancelled at its deadline and
  when its caller cancels the RPC.
* :data:`CANCELS_TASKS` - a task whose future was cancelled while it waited behind a busy
  worker is never started.

:data:`ALL` is every flag (the RabbitMQ communicators, and the memory ones with an encoder);
``LocalCommunicator`` has none of them.
A blocking communicator (:class:`BlockingTransport`) also promises that a ``broadcast_send``
or ``broadcast_send_many`` returns only once its own subscribers handled what it had received
by the confirm (kiwipy 0.9's tests count at once); those tests skip for asyncio ones.
Every await on an outcome is bounded by :data:`TIMEOUT` seconds, so a broken transport fails
fast instead of hanging.

The errors expected are kiwipy's own: ``UnroutableError`` raised by ``rpc_send`` itself
(its text the same on every transport: :func:`unroutable_rpc`),
``RemoteException`` (with ``remote_type``) for a subscriber's exception,
``DuplicateSubscriberIdentifier``, ``ValueError`` for unknown subscriber ids, ``QueueEmpty``,
``kiwipy.InvalidStateError`` (which is also ``asyncio.InvalidStateError``) for a pull-mode
task in the wrong state, a cancelled sender's future for a subscriber raising
``kiwipy.CancelledError`` or a cancelled pull-mode outcome (the task is then finished),
``CommunicatorClosed`` from every call after close and from futures still waiting then, and
``EncodeError`` (the suite's unencodable object is a ``threading.Lock``).
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import functools
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Callable, ClassVar, Optional

import pytest

import kiwipy
from tests.contract_battery import BatteryContract
from tests.contract_deadlines import CANCELS_TASKS, DEADLINES, DeadlinesContract

__all__ = (
    "ALL",
    "AWAITS",
    "BATCHES",
    "CANCELS_TASKS",
    "DEADLINES",
    "ENCODES",
    "ISOLATES",
    "NAMES",
    "QUEUES",
    "SHARED",
    "TIMEOUT",
    "AsyncTransport",
    "BlockingTransport",
    "CommunicatorContract",
    "ContractTransport",
    "Inbox",
    "needs",
    "settle",
)

QUEUES = "queues"
SHARED = "shared"
AWAITS = "awaits"
ISOLATES = "isolates"
ENCODES = "encodes"
BATCHES = "batches"
NAMES = "names"
ALL = frozenset(
    {QUEUES, SHARED, AWAITS, ISOLATES, ENCODES, BATCHES, NAMES, DEADLINES, CANCELS_TASKS}
)

#: Seconds any single outcome may take before the test fails.
TIMEOUT = 5.0
#: Seconds a control round (one task, one RPC) may take after a refused call.
CONTROL_TIMEOUT = 3.0


# -- helpers for tests ----------------------------------------------------------------------


def unroutable_rpc(identifier: str) -> str:
    """The text of the :class:`~kiwipy.UnroutableError` of an RPC nobody holds, the same on
    every transport (issue 19)."""
    return f"no subscriber with RPC identifier {identifier!r}"


async def settle(future: Awaitable[Any], timeout: float = TIMEOUT) -> Any:
    """:returns: the result of *future*, failing the test after *timeout* seconds."""
    return await asyncio.wait_for(future, timeout)


class Inbox:
    """A thread-safe record of what subscribers received, awaitable from the test's loop.
    Create it inside the test (it binds to the running loop)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._changed = asyncio.Event()

    def put(self, item: Any) -> None:
        """Record *item*; callable from any thread or loop."""
        with self._lock:
            self._items.append(item)
        try:
            running: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if running is self._loop:
                self._changed.set()
            else:
                self._loop.call_soon_threadsafe(self._changed.set)
        except RuntimeError:  # the test is over and its loop closed
            pass

    @property
    def items(self) -> list[Any]:
        with self._lock:
            return list(self._items)

    async def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[Any]:
        """:returns: the items once there are at least *count* of them."""

        async def enough() -> list[Any]:
            while True:
                self._changed.clear()
                items = self.items
                if len(items) >= count:
                    return items
                await self._changed.wait()

        return await asyncio.wait_for(enough(), timeout)


def needs(*capabilities: str) -> Callable[[Any], Any]:
    """Mark a contract test as needing *capabilities* (see the module docstring)."""

    def mark(test: Any) -> Any:
        test.contract_needs = frozenset(capabilities)
        return test

    return mark


def _not_applicable(missing: frozenset[str]) -> Callable[[Any], None]:
    """:returns: a stand-in for a contract test that needs the *missing* capabilities: it
    requests no fixture and is skipped with a reason naming them. A new function each time,
    so the mark never lands on the base class's test, which other transports run."""

    @pytest.mark.skip(reason=f"transport lacks capability: {', '.join(sorted(missing))}")
    def test(self: Any) -> None:
        """Not part of this transport's contract."""

    return test


# -- adapters: one async view over every communicator ---------------------------------------


def _to_asyncio(value: Any) -> Any:
    """Convert a (nested) ``concurrent.futures.Future`` into asyncio futures on the running
    loop, level by level; anything else is returned as is."""
    if not isinstance(value, concurrent.futures.Future):
        return value
    loop = asyncio.get_running_loop()
    target = loop.create_future()

    def settle_target(done: concurrent.futures.Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif isinstance(done.exception(), StopIteration):
            # an asyncio future refuses StopIteration (TypeError), as a coroutine does (PEP 479)
            error = RuntimeError(f"the future failed with {done.exception()!r}")
            target.set_exception(error.with_traceback(None))
        elif done.exception() is not None:
            target.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            target.set_result(_to_asyncio(done.result()))

    def forward(done: concurrent.futures.Future[Any]) -> None:
        try:
            loop.call_soon_threadsafe(settle_target, done)
        except RuntimeError:  # the test's loop is closed
            pass

    value.add_done_callback(forward)
    return target


async def _blocking(fn: Callable[..., Any], *args: Any) -> Any:
    return _to_asyncio(await asyncio.to_thread(fn, *args))


class _AsyncContext:
    """Async context manager running a blocking one in worker threads."""

    def __init__(self, make: Callable[[], Any], wrap: Callable[[Any], Any]) -> None:
        self._make = make
        self._wrap = wrap
        self._manager: Any = None

    async def __aenter__(self) -> Any:
        self._manager = self._make()
        return self._wrap(await asyncio.to_thread(self._manager.__enter__))

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await asyncio.to_thread(self._manager.__exit__, *exc_info)


class _BlockingTask:
    """Async view of a thread-world incoming task. ``process()`` returns the real
    ``concurrent.futures.Future`` (tests resolve it with ``set_result``)."""

    def __init__(self, task: Any) -> None:
        self.native = task

    @property
    def body(self) -> Any:
        return self.native.body

    @property
    def no_reply(self) -> bool:
        return bool(self.native.no_reply)

    @property
    def state(self) -> str:
        return str(self.native.state)

    def process(self) -> Any:
        return self.native.process()

    async def requeue(self) -> None:
        await asyncio.to_thread(self.native.requeue)

    def processing(self) -> _AsyncContext:
        return _AsyncContext(self.native.processing, lambda outcome: outcome)


def _wrap_task(task: Any) -> Any:
    return None if task is None else _BlockingTask(task)


class _BlockingQueue:
    """Async view of a thread-world task queue."""

    def __init__(self, queue: Any) -> None:
        self.native = queue

    async def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Any:
        if timeout is None:  # kiwipy 0.9's thread queue has no timeout parameter
            return await _blocking(self.native.task_send, task, no_reply)
        send = functools.partial(self.native.task_send, timeout=timeout)
        return await _blocking(send, task, no_reply)

    async def add_task_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        if identifier is None:  # kiwipy 0.9's thread queue has no identifier parameter
            return await _blocking(self.native.add_task_subscriber, subscriber)
        return await _blocking(self.native.add_task_subscriber, subscriber, identifier)

    async def remove_task_subscriber(self, identifier: Any) -> None:
        await _blocking(self.native.remove_task_subscriber, identifier)

    def next_task(self, timeout: float = TIMEOUT, fail: bool = True) -> _AsyncContext:
        return _AsyncContext(
            functools.partial(self.native.next_task, timeout=timeout, fail=fail), _wrap_task
        )

    async def __aiter__(self) -> AsyncIterator[_BlockingTask]:
        iterator = iter(self.native)
        try:
            while True:
                task = await asyncio.to_thread(next, iterator, None)
                if task is None:
                    return
                yield _BlockingTask(task)
        finally:
            await asyncio.to_thread(iterator.close)


class _View:
    """The async API the suite uses, over a native communicator."""

    def __init__(self, native: Any) -> None:
        self.native = native

    async def _run(self, name: str, *args: Any) -> Any:
        raise NotImplementedError

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """:returns: what the native method *name* returns for these arguments (keywords
        too), in the async world."""
        return await self._run_with(functools.partial(getattr(self.native, name), **kwargs), *args)

    async def _run_with(self, method: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    async def native_call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """:returns: what the native method *name* returns, not converted (a blocking
        communicator's ``concurrent.futures.Future`` itself, to cancel it)."""
        method = functools.partial(getattr(self.native, name), **kwargs)
        if isinstance(self, _AsyncView):
            return await method(*args)
        return await asyncio.to_thread(method, *args)

    async def close(self) -> None:
        raise NotImplementedError

    def is_closed(self) -> bool:
        raise NotImplementedError

    async def add_rpc_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        return await self._run("add_rpc_subscriber", subscriber, identifier)

    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        await self._run("remove_rpc_subscriber", identifier)

    async def add_task_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        return await self._run("add_task_subscriber", subscriber, identifier)

    async def remove_task_subscriber(self, identifier: Any) -> None:
        await self._run("remove_task_subscriber", identifier)

    async def add_broadcast_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        return await self._run("add_broadcast_subscriber", subscriber, identifier)

    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        await self._run("remove_broadcast_subscriber", identifier)

    async def task_send(self, task: Any, no_reply: bool = False) -> Any:
        return await self._run("task_send", task, no_reply)

    async def rpc_send(self, recipient_id: Any, msg: Any) -> Any:
        return await self._run("rpc_send", recipient_id, msg)

    async def rpc_send_many(self, calls: list[tuple[Any, Any]]) -> list[Any]:
        return list(await self._run("rpc_send_many", calls))

    async def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        return bool(await self._run("broadcast_send", body, sender, subject, correlation_id))

    async def broadcast_send_many(self, broadcasts: list[tuple[Any, ...]]) -> Any:
        return await self._run("broadcast_send_many", broadcasts)  # None: the test checks it


class _AsyncView(_View):
    async def _run(self, name: str, *args: Any) -> Any:
        return await getattr(self.native, name)(*args)

    async def _run_with(self, method: Callable[..., Any], *args: Any) -> Any:
        return await method(*args)

    async def task_queue(self, name: str, prefetch_count: int = 0) -> Any:
        if prefetch_count:
            return await self.native.task_queue(name, 0, prefetch_count)
        return await self.native.task_queue(name)

    async def close(self) -> None:
        await self.native.disconnect()

    def is_closed(self) -> bool:
        return not self.native.connected()


class _BlockingView(_View):
    async def _run(self, name: str, *args: Any) -> Any:
        return await _blocking(getattr(self.native, name), *args)

    async def _run_with(self, method: Callable[..., Any], *args: Any) -> Any:
        return await _blocking(method, *args)

    async def rpc_send_many(self, calls: list[tuple[Any, Any]]) -> list[Any]:
        """The native call, with each future (also those of a ``BatchSendError``) wrapped."""
        try:
            futures = await asyncio.to_thread(self.native.rpc_send_many, calls)
        except kiwipy.BatchSendError as exc:
            exc.futures = [_to_asyncio(future) for future in exc.futures]
            raise
        return [_to_asyncio(future) for future in futures]

    async def task_queue(self, name: str, prefetch_count: int = 0) -> _BlockingQueue:
        if prefetch_count:
            make = functools.partial(self.native.task_queue, name, 0, prefetch_count)
            return _BlockingQueue(await asyncio.to_thread(make))
        return _BlockingQueue(await asyncio.to_thread(self.native.task_queue, name))

    async def close(self) -> None:
        await asyncio.to_thread(self.native.close)

    def is_closed(self) -> bool:
        return bool(self.native.is_closed())


class ContractTransport(abc.ABC):
    """Makes the communicators of one test, all in one namespace.

    :param namespace: unique per test (see the module docstring).
    :param dead_letters: reads what was dead-lettered from a task queue (a coroutine function
        of the queue name returning a list); needed by the :data:`DEADLINES` tests.
    """

    def __init__(
        self,
        namespace: str,
        dead_letters: Optional[Callable[[str], Awaitable[list[Any]]]] = None,
    ) -> None:
        self.namespace = namespace
        self._views: list[_View] = []
        self._dead_letters = dead_letters

    async def dead_letters(self, queue: str) -> list[Any]:
        """:returns: what was dead-lettered from the task queue *queue*."""
        if self._dead_letters is None:
            raise NotImplementedError("this transport gave no dead_letters reader")
        return await self._dead_letters(queue)

    def name(self, suffix: str) -> str:
        """:returns: a task queue name or RPC identifier unique to this test."""
        return f"{self.namespace}.{suffix}"

    async def connect(self) -> Any:
        """:returns: the async view of a new communicator in this namespace."""
        view = await self._open()
        self._views.append(view)
        return view

    @abc.abstractmethod
    async def _open(self) -> _View: ...

    @abc.abstractmethod
    def make_future(self) -> Any:
        """:returns: a future of the flavour the communicator's subscribers may return."""

    async def aclose(self) -> None:
        for view in reversed(self._views):
            await view.close()

    async def __aenter__(self) -> ContractTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncTransport(ContractTransport):
    """A transport of asyncio communicators made by the coroutine function *factory*."""

    def __init__(
        self,
        factory: Callable[[], Awaitable[Any]],
        *,
        namespace: str,
        dead_letters: Optional[Callable[[str], Awaitable[list[Any]]]] = None,
    ) -> None:
        super().__init__(namespace, dead_letters)
        self._factory = factory

    async def _open(self) -> _View:
        return _AsyncView(await self._factory())

    def make_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()


class BlockingTransport(ContractTransport):
    """A transport of blocking communicators made by *factory* (run in a worker thread)."""

    def __init__(
        self,
        factory: Callable[[], Any],
        *,
        namespace: str,
        dead_letters: Optional[Callable[[str], Awaitable[list[Any]]]] = None,
    ) -> None:
        super().__init__(namespace, dead_letters)
        self._factory = factory

    async def _open(self) -> _View:
        return _BlockingView(await asyncio.to_thread(self._factory))

    def make_future(self) -> concurrent.futures.Future[Any]:
        return concurrent.futures.Future()


# -- the contract ---------------------------------------------------------------------------


def _record_broadcast(
    inbox: Inbox, tag: str, _comm: Any, body: Any, sender: Any, subject: Any, correlation_id: Any
) -> None:
    # Named parameters: kiwipy 0.9's LocalCommunicator passes all but the first by keyword.
    inbox.put((tag, body, sender, subject, correlation_id))


def _put_and_return(inbox: Inbox, item: Any, result: Any) -> Any:
    inbox.put(item)
    return result


def _answer(ident: str, _comm: Any, msg: Any) -> Any:
    return {"by": ident, "msg": msg}


def _work(inbox: Inbox, worker: int, _comm: Any, task: Any) -> Any:
    inbox.put((worker, task))
    return task * 10


#: What subscribers may raise: every one must reach the sender as a ``RemoteException``.
_RAISED: list[type[BaseException]] = [
    RuntimeError,
    StopIteration,
    StopAsyncIteration,
    GeneratorExit,
    KeyboardInterrupt,
    SystemExit,
    asyncio.CancelledError,
]


class _Unprintable(Exception):
    """An exception whose text cannot be had."""

    def __str__(self) -> str:
        raise ValueError("no text for you")


class _Explosive(dict):  # type: ignore[type-arg]
    """A result whose encoding raises a ``BaseException`` in any encoder (JSON asks a dict
    subclass for its items, YAML and pickle for its reduction)."""

    def items(self) -> Any:
        raise KeyboardInterrupt("encoding exploded")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise KeyboardInterrupt("encoding exploded")


async def _subscribe(
    comm: Any, transport: ContractTransport, kind: str, subscriber: Callable[..., Any]
) -> Callable[[Any], Awaitable[Any]]:
    """Add *subscriber* as a task or RPC subscriber (*kind*). :returns: its send."""
    if kind == "task":
        await comm.add_task_subscriber(subscriber)
        return comm.task_send  # type: ignore[no-any-return]
    ident = await comm.add_rpc_subscriber(subscriber, transport.name(f"raising{id(subscriber)}"))
    return functools.partial(comm.rpc_send, ident)


#: Rounds of the broadcast barrier tests: a missing barrier fails one of them every time.
_BARRIER_ROUNDS = 20
#: Senders of each round; two of them pass :func:`_slow_jones_filter`.
_BARRIER_SENDERS = ("bob.jones", "bob.smith", "alice.jones")


def _note_slowly(
    heard: list[Any], _comm: Any, body: Any, sender: Any, subject: Any, correlation_id: Any
) -> None:
    time.sleep(0.005)  # not synchronisation: a subscriber that takes a moment widens the race
    heard.append((body, sender))


def _slow_jones_filter(heard: list[Any]) -> kiwipy.BroadcastFilter:
    return kiwipy.BroadcastFilter(functools.partial(_note_slowly, heard), sender="*.jones")


def _blocking_native(comm: Any, transport: ContractTransport) -> Any:
    """:returns: the blocking communicator behind *comm*; skips for an asyncio one, whose
    ``broadcast_send`` returns at the confirm (the barrier is the thread facade's)."""
    if not isinstance(transport, BlockingTransport):
        pytest.skip("asyncio communicator: broadcast_send does not wait for subscribers")
    return comm.native


class CommunicatorContract(BatteryContract, DeadlinesContract):
    """The contract suite; see the module docstring for how to run it against a transport.
    It includes the hostile battery of :class:`tests.contract_battery.BatteryContract`."""

    capabilities: ClassVar[frozenset[str]] = ALL

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in dir(cls):
            test = getattr(cls, name)
            needed: frozenset[str] = getattr(test, "contract_needs", frozenset())
            if name.startswith("test_") and not needed <= cls.capabilities:
                setattr(cls, name, _not_applicable(needed - cls.capabilities))

    @pytest.fixture
    async def comm(self, transport: ContractTransport) -> Any:
        return await transport.connect()

    # Tasks

    async def test_task_result(self, comm: Any) -> None:
        await comm.add_task_subscriber(lambda _c, task: task * 2)
        assert await settle(await comm.task_send(21)) == 42

    async def test_task_exception_becomes_remote_exception(self, comm: Any) -> None:
        def fail(_c: Any, task: Any) -> None:
            raise RuntimeError(f"task {task} failed")

        await comm.add_task_subscriber(fail)
        with pytest.raises(kiwipy.RemoteException, match="task 7 failed") as info:
            await settle(await comm.task_send(7))
        assert str(info.value.remote_type).endswith("RuntimeError")

    async def test_task_rejection_passes_to_next_subscriber(self, comm: Any) -> None:
        rejected = Inbox()

        def reject(_c: Any, task: Any) -> None:
            rejected.put(task)
            raise kiwipy.TaskRejected

        await comm.add_task_subscriber(reject)
        await comm.add_task_subscriber(lambda _c, task: f"took {task}")
        assert await settle(await comm.task_send("t")) == "took t"
        assert rejected.items == ["t"]

    async def test_task_no_reply(self, comm: Any) -> None:
        received = Inbox()
        await comm.add_task_subscriber(lambda _c, task: received.put(task))
        assert await comm.task_send("fire", no_reply=True) is None
        assert await received.wait_for(1) == ["fire"]

    async def test_task_returning_a_future_gives_a_nested_future(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        inner = transport.make_future()
        await comm.add_task_subscriber(lambda _c, task: inner)
        level = await settle(await comm.task_send("x"))
        assert asyncio.isfuture(level)
        inner.set_result("later")
        assert await settle(level) == "later"

    @needs(AWAITS)
    async def test_coroutine_and_async_callable_subscribers(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        async def double(_c: Any, task: Any) -> Any:
            await asyncio.sleep(0)
            return task * 2

        class Triple:  # kiwipy 0.9 never awaited such objects (bug B11)
            async def __call__(self, _c: Any, msg: Any) -> Any:
                await asyncio.sleep(0)
                return msg * 3

        await comm.add_task_subscriber(double)
        await comm.add_rpc_subscriber(Triple(), transport.name("triple"))
        assert await settle(await comm.task_send(21)) == 42
        assert await settle(await comm.rpc_send(transport.name("triple"), 3)) == 9

    @needs(QUEUES)
    async def test_task_waits_for_a_subscriber(self, comm: Any) -> None:
        future = await comm.task_send(5)
        await comm.add_task_subscriber(lambda _c, task: task + 1)
        assert await settle(future) == 6

    @needs(QUEUES)
    async def test_removed_task_subscriber_gets_no_more_tasks(self, comm: Any) -> None:
        old, new = Inbox(), Inbox()
        identifier = await comm.add_task_subscriber(lambda _c, task: old.put(task))
        await comm.remove_task_subscriber(identifier)
        future = await comm.task_send("for the new one")
        await comm.add_task_subscriber(lambda _c, task: _put_and_return(new, task, "new"))
        assert await settle(future) == "new"
        assert (old.items, new.items) == ([], ["for the new one"])

    @needs(QUEUES)
    async def test_named_task_queue(self, comm: Any, transport: ContractTransport) -> None:
        default = Inbox()
        await comm.add_task_subscriber(lambda _c, task: default.put(task))
        queue = await comm.task_queue(transport.name("custom"))
        await queue.add_task_subscriber(lambda _c, task: f"custom {task}")
        assert await settle(await queue.task_send(1)) == "custom 1"
        assert default.items == []

    @needs(QUEUES, SHARED)
    async def test_named_task_queue_is_shared(self, transport: ContractTransport) -> None:
        sender, worker = await transport.connect(), await transport.connect()
        name = transport.name("shared")
        await (await worker.task_queue(name)).add_task_subscriber(lambda _c, t: t.upper())
        assert await settle(await (await sender.task_queue(name)).task_send("hi")) == "HI"

    @needs(QUEUES, SHARED)
    async def test_rejected_task_goes_to_another_communicator(
        self, transport: ContractTransport
    ) -> None:
        requester, picky, worker = [await transport.connect() for _ in range(3)]
        seen = Inbox()

        def reject(_c: Any, task: Any) -> None:
            seen.put(task)
            raise kiwipy.TaskRejected

        await picky.add_task_subscriber(reject)
        first = await requester.task_send("job")
        assert (await seen.wait_for(1))[0] == "job"  # it waits: nobody else can take it yet
        await worker.add_task_subscriber(lambda _c, task: f"{task} done")
        assert await settle(first) == "job done"
        more = [await requester.task_send(n) for n in range(5)]
        assert [await settle(future) for future in more] == [f"{n} done" for n in range(5)]

    @needs(QUEUES, SHARED)
    async def test_workers_share_the_load(self, transport: ContractTransport) -> None:
        requester = await transport.connect()
        done = Inbox()
        for index in range(3):
            worker = await transport.connect()
            await worker.add_task_subscriber(functools.partial(_work, done, index))
        futures = [await requester.task_send(n) for n in range(30)]
        assert [await settle(future) for future in futures] == [n * 10 for n in range(30)]
        assert sorted(task for _, task in done.items) == list(range(30))  # each exactly once
        assert len({worker for worker, _ in done.items}) > 1

    @needs(QUEUES, SHARED, AWAITS)
    async def test_unfinished_task_of_closed_communicator_goes_to_another(
        self, transport: ContractTransport
    ) -> None:
        requester, quitter, worker = [await transport.connect() for _ in range(3)]
        started = Inbox()

        async def hold(_c: Any, task: Any) -> None:
            started.put(task)
            await asyncio.Event().wait()  # never finishes

        await quitter.add_task_subscriber(hold)
        future = await requester.task_send("survivor")
        await started.wait_for(1)
        await quitter.close()
        await worker.add_task_subscriber(lambda _c, task: f"{task} done")
        assert await settle(future) == "survivor done"

    # Tasks: pull mode

    @needs(QUEUES)
    async def test_next_task_process(self, comm: Any, transport: ContractTransport) -> None:
        queue = await comm.task_queue(transport.name("pull"))
        future = await queue.task_send({"n": 1})
        async with queue.next_task(timeout=TIMEOUT) as task:
            assert (task.body, task.no_reply, task.state) == ({"n": 1}, False, "pending")
            outcome = task.process()
            assert task.state == "processing"
            outcome.set_result("processed")
        assert await settle(future) == "processed"
        assert task.state == "finished"

    @needs(QUEUES)
    async def test_next_task_on_empty_queue(self, comm: Any, transport: ContractTransport) -> None:
        queue = await comm.task_queue(transport.name("empty"))
        with pytest.raises(kiwipy.QueueEmpty):
            async with queue.next_task(timeout=0.05):
                pytest.fail("the queue is empty")
        async with queue.next_task(timeout=0.05, fail=False) as task:
            assert task is None

    @needs(QUEUES)
    async def test_task_left_pending_is_requeued(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        queue = await comm.task_queue(transport.name("pending"))
        future = await queue.task_send("again")
        async with queue.next_task(timeout=TIMEOUT) as task:
            assert task.body == "again"
        async with queue.next_task(timeout=TIMEOUT) as task:
            assert task.body == "again"
            task.process().set_result("second time")
        assert await settle(future) == "second time"

    @needs(QUEUES)
    async def test_requeue(self, comm: Any, transport: ContractTransport) -> None:
        queue = await comm.task_queue(transport.name("requeue"))
        future = await queue.task_send("r")
        async with queue.next_task(timeout=TIMEOUT) as task:
            await task.requeue()
            assert task.state == "requeued"
            with pytest.raises(kiwipy.InvalidStateError):
                task.process()
        async with queue.next_task(timeout=TIMEOUT) as task:
            assert task.body == "r"
            task.process().set_result(1)
        assert await settle(future) == 1

    @needs(QUEUES)
    async def test_cancelling_a_pulled_task_outcome_cancels_the_sender_future(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        """Issue 11 item 7: a cancelled outcome is final, as a subscriber raising
        ``kiwipy.CancelledError`` (``requeue()`` is how a task is given back)."""
        queue = await comm.task_queue(transport.name("cancel"))
        future = await queue.task_send("c")
        async with queue.next_task(timeout=TIMEOUT) as task:
            task.process().cancel()
            await asyncio.wait([future], timeout=TIMEOUT)
            assert future.cancelled()
            assert task.state == "finished"
        with pytest.raises(kiwipy.QueueEmpty):
            async with queue.next_task(timeout=0.05):
                pytest.fail("a cancelled task is not delivered again")

    @needs(QUEUES)
    @pytest.mark.parametrize("error", _RAISED, ids=lambda error: error.__name__)
    async def test_any_exception_of_a_pulled_task_outcome_reaches_the_sender(
        self, comm: Any, transport: ContractTransport, error: type[BaseException]
    ) -> None:
        queue = await comm.task_queue(transport.name("pulled"))
        future = await queue.task_send("p")
        async with queue.next_task(timeout=TIMEOUT) as task:
            outcome = task.process()
            if error is StopIteration and asyncio.isfuture(outcome):
                outcome.set_exception(RuntimeError("an asyncio future refuses StopIteration"))
                error = RuntimeError
            else:
                outcome.set_exception(error("boom"))
        with pytest.raises(kiwipy.RemoteException) as info:
            await settle(future)
        assert str(info.value.remote_type).endswith(f".{error.__name__}")

    @needs(QUEUES)
    async def test_wrong_state_calls_raise_one_error_type(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        """Issue 11 item 7: ``kiwipy.InvalidStateError``, which is also the
        ``asyncio.InvalidStateError`` kiwipy 0.9 raised, on every transport."""
        queue = await comm.task_queue(transport.name("states"))
        future = await queue.task_send("s")
        async with queue.next_task(timeout=TIMEOUT) as task:
            outcome = task.process()
            with pytest.raises(kiwipy.InvalidStateError) as twice:
                task.process()
            outcome.set_result(1)
            assert await settle(future) == 1
            with pytest.raises(kiwipy.InvalidStateError) as finished:
                await task.requeue()
            with pytest.raises(kiwipy.InvalidStateError) as again:
                async with task.processing():
                    pytest.fail("a finished task cannot be processed")
        for info in (twice, finished, again):
            assert isinstance(info.value, asyncio.InvalidStateError)
            assert isinstance(info.value, kiwipy.KiwiError)

    @needs(QUEUES)
    async def test_processing_a_pulled_task_after_close(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        """Issue 11 item 7: ``CommunicatorClosed``, as every call after close, on every
        transport (RabbitMQ handed out an outcome future nobody would ever act on)."""
        queue = await comm.task_queue(transport.name("closed"))
        await queue.task_send("late")
        async with queue.next_task(timeout=TIMEOUT) as task:
            await comm.close()
            with pytest.raises(kiwipy.CommunicatorClosed):
                task.process()

    @needs(QUEUES)
    async def test_processing(self, comm: Any, transport: ContractTransport) -> None:
        queue = await comm.task_queue(transport.name("processing"))
        good, bad = await queue.task_send("good"), await queue.task_send("bad")
        async with queue.next_task(timeout=TIMEOUT) as task:
            async with task.processing() as outcome:
                outcome.set_result(f"{task.body} done")
        with pytest.raises(ValueError, match="no good"):
            async with queue.next_task(timeout=TIMEOUT) as task:
                async with task.processing():
                    raise ValueError("no good")
        assert await settle(good) == "good done"
        with pytest.raises(kiwipy.RemoteException, match="no good"):
            await settle(bad)

    @needs(QUEUES)
    async def test_iterating_over_a_queue(self, comm: Any, transport: ContractTransport) -> None:
        queue = await comm.task_queue(transport.name("iterate"))
        futures = [await queue.task_send(n) for n in range(3)]
        seen = []
        async for task in queue:
            seen.append(task.body)
            if task.body != 1:
                task.process().set_result(task.body * 10)
        assert sorted(seen) == [0, 1, 2]
        assert [await settle(futures[0]), await settle(futures[2])] == [0, 20]
        async with queue.next_task(timeout=TIMEOUT) as task:  # the untouched one came back
            assert task.body == 1
            task.process().set_result("late")
        assert await settle(futures[1]) == "late"

    # RPC

    async def test_rpc_result(self, comm: Any, transport: ContractTransport) -> None:
        ident = transport.name("echo")
        assert await comm.add_rpc_subscriber(lambda _c, msg: {"echo": msg}, ident) == ident
        assert await settle(await comm.rpc_send(ident, [1, 2])) == {"echo": [1, 2]}

    async def test_rpc_exception(self, comm: Any, transport: ContractTransport) -> None:
        def fail(_c: Any, msg: Any) -> None:
            raise ValueError(f"bad request {msg}")

        await comm.add_rpc_subscriber(fail, transport.name("fail"))
        with pytest.raises(kiwipy.RemoteException, match="bad request 3") as info:
            await settle(await comm.rpc_send(transport.name("fail"), 3))
        assert str(info.value.remote_type).endswith("ValueError")

    async def test_rpc_to_unknown_recipient(self, comm: Any, transport: ContractTransport) -> None:
        nobody = transport.name("nobody")
        with pytest.raises(kiwipy.UnroutableError) as info:
            await comm.rpc_send(nobody, "hello")
        assert str(info.value) == unroutable_rpc(nobody)  # one wording on every transport

    async def test_rpc_removed_subscriber_is_unroutable(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        ident = await comm.add_rpc_subscriber(lambda _c, msg: msg, transport.name("gone"))
        await comm.remove_rpc_subscriber(ident)
        with pytest.raises(kiwipy.UnroutableError) as info:
            await comm.rpc_send(ident, "hello")
        assert str(info.value) == unroutable_rpc(ident)

    async def test_rpc_nested_futures(self, comm: Any, transport: ContractTransport) -> None:
        first, second = transport.make_future(), transport.make_future()
        await comm.add_rpc_subscriber(lambda _c, msg: first, transport.name("nested"))
        level1 = await settle(await comm.rpc_send(transport.name("nested"), "go"))
        first.set_result(second)
        level2 = await settle(level1)
        second.set_result("deep")
        assert await settle(level2) == "deep"

    async def test_rpc_duplicate_identifier(self, comm: Any, transport: ContractTransport) -> None:
        ident = await comm.add_rpc_subscriber(lambda _c, msg: 1, transport.name("dup"))
        with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
            await comm.add_rpc_subscriber(lambda _c, msg: 2, ident)
        assert await settle(await comm.rpc_send(ident, None)) == 1

    @needs(SHARED)
    async def test_rpc_identifier_is_unique_across_communicators(
        self, transport: ContractTransport
    ) -> None:
        first, second, caller = [await transport.connect() for _ in range(3)]
        ident = await first.add_rpc_subscriber(lambda _c, msg: "first", transport.name("one"))
        with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
            await second.add_rpc_subscriber(lambda _c, msg: "second", ident)
        await first.close()  # releases the identifier
        await second.add_rpc_subscriber(lambda _c, msg: "second", ident)
        assert await settle(await caller.rpc_send(ident, None)) == "second"

    @needs(BATCHES)
    async def test_rpc_send_many_to_one_subscriber(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        ident = await comm.add_rpc_subscriber(lambda _c, msg: {"n": msg}, transport.name("one"))
        futures = await comm.rpc_send_many([(ident, n) for n in range(20)])
        assert [await settle(future) for future in futures] == [{"n": n} for n in range(20)]

    @needs(BATCHES)
    async def test_rpc_send_many_to_several_subscribers(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        idents = [transport.name(f"pid{n}") for n in range(3)]
        for ident in idents:
            await comm.add_rpc_subscriber(functools.partial(_answer, ident), ident)
        calls = [(idents[n % 3], n) for n in range(9)]
        futures = await comm.rpc_send_many(calls)
        expected = [{"by": ident, "msg": n} for ident, n in calls]
        assert [await settle(future) for future in futures] == expected

    @needs(BATCHES)
    async def test_rpc_send_many_with_an_unknown_recipient(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        known = [transport.name("alive1"), transport.name("alive2")]
        for ident in known:
            await comm.add_rpc_subscriber(functools.partial(_answer, ident), ident)
        calls = [(known[0], "pause"), (transport.name("gone"), "pause"), (known[1], "pause")]
        with pytest.raises(kiwipy.BatchSendError) as info:
            await comm.rpc_send_many(calls)
        error = info.value
        assert list(error.errors) == [1]
        assert isinstance(error.errors[1], kiwipy.UnroutableError)
        assert str(error.errors[1]) == unroutable_rpc(transport.name("gone"))
        assert error.futures[1] is None
        answers = [await settle(error.futures[i]) for i in (0, 2)]
        assert answers == [{"by": ident, "msg": "pause"} for ident in known]

    @needs(BATCHES, ENCODES)
    async def test_rpc_send_many_sends_nothing_if_one_cannot_be_encoded(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        seen = Inbox()
        ident = await comm.add_rpc_subscriber(
            lambda _c, msg: _put_and_return(seen, msg, msg), transport.name("enc")
        )
        with pytest.raises(kiwipy.EncodeError):
            await comm.rpc_send_many([(ident, "first"), (ident, threading.Lock())])
        assert await settle(await comm.rpc_send(ident, "after")) == "after"
        assert seen.items == ["after"]

    # Broadcasts

    async def test_broadcast_reaches_every_subscriber(self, comm: Any) -> None:
        inbox = Inbox()
        await comm.add_broadcast_subscriber(functools.partial(_record_broadcast, inbox, "a"))
        await comm.add_broadcast_subscriber(functools.partial(_record_broadcast, inbox, "b"))
        assert await comm.broadcast_send("news", sender="me", subject="s", correlation_id="c")
        expected = [(tag, "news", "me", "s", "c") for tag in ("a", "b")]
        assert sorted(await inbox.wait_for(2)) == expected

    @needs(SHARED)
    async def test_broadcast_reaches_every_communicator(self, transport: ContractTransport) -> None:
        sender = await transport.connect()
        inbox = Inbox()
        for tag in ("x", "y", "z"):
            receiver = await transport.connect()
            await receiver.add_broadcast_subscriber(
                functools.partial(_record_broadcast, inbox, tag)
            )
        assert await sender.broadcast_send({"body": 1}, subject="all")
        expected = [(tag, {"body": 1}, None, "all", None) for tag in ("x", "y", "z")]
        assert sorted(await inbox.wait_for(3)) == expected

    async def test_broadcast_filters(self, comm: Any) -> None:
        inbox = Inbox()
        by_subject = functools.partial(_record_broadcast, inbox, "subject")
        by_sender = functools.partial(_record_broadcast, inbox, "sender")
        await comm.add_broadcast_subscriber(kiwipy.BroadcastFilter(by_subject, subject="buy.*"))
        await comm.add_broadcast_subscriber(kiwipy.BroadcastFilter(by_sender, sender="alice.*"))
        messages = [
            ("1", "bob", "sell.car"),
            ("2", "alice.jones", "sell.car"),
            ("3", "bob", "buy.car"),
            ("4", "alice.smith", "buy.boat"),
            ("5", "aliceX", "buyXcar"),  # '.' in a filter only matches a dot
            ("end", "alice.last", "buy.last"),  # matches both: sent last, seen last
        ]
        for body, sender, subject in messages:
            await comm.broadcast_send(body, sender=sender, subject=subject)
        got = await inbox.wait_for(6)
        assert sorted((tag, body) for tag, body, *_ in got) == [
            ("sender", "2"),
            ("sender", "4"),
            ("sender", "end"),
            ("subject", "3"),
            ("subject", "4"),
            ("subject", "end"),
        ]

    async def test_removed_broadcast_subscriber_gets_nothing(self, comm: Any) -> None:
        inbox = Inbox()
        first = await comm.add_broadcast_subscriber(
            functools.partial(_record_broadcast, inbox, "a")
        )
        await comm.add_broadcast_subscriber(functools.partial(_record_broadcast, inbox, "b"))
        await comm.broadcast_send("one")
        await inbox.wait_for(2)
        await comm.remove_broadcast_subscriber(first)
        await comm.broadcast_send("two")
        got = await inbox.wait_for(3)
        assert sorted((tag, body) for tag, body, *_ in got) == [
            ("a", "one"),
            ("b", "one"),
            ("b", "two"),
        ]

    async def test_broadcast_without_subscribers(self, comm: Any) -> None:
        assert await comm.broadcast_send("nobody listens") is True

    async def test_blocking_broadcast_send_returns_after_own_subscribers(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        """kiwipy 0.9's own pattern (``test_broadcast_filter_sender``): blocking sends to a
        communicator's own filtered subscriber, then a count without waiting."""
        native = _blocking_native(comm, transport)
        heard: list[Any] = []
        await comm.add_broadcast_subscriber(_slow_jones_filter(heard))

        def send_and_count() -> list[int]:
            counts = []
            for round_ in range(_BARRIER_ROUNDS):
                for sender in _BARRIER_SENDERS:
                    native.broadcast_send(round_, sender=sender)
                counts.append(len(heard))
            return counts

        counts = await asyncio.to_thread(send_and_count)
        assert counts == [2 * done for done in range(1, _BARRIER_ROUNDS + 1)]

    @needs(BATCHES)
    async def test_blocking_broadcast_send_many_returns_after_own_subscribers(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        native = _blocking_native(comm, transport)
        heard: list[Any] = []
        await comm.add_broadcast_subscriber(_slow_jones_filter(heard))

        def send_and_count() -> list[int]:
            counts = []
            for round_ in range(_BARRIER_ROUNDS):
                native.broadcast_send_many([(round_, sender) for sender in _BARRIER_SENDERS])
                counts.append(len(heard))
            return counts

        counts = await asyncio.to_thread(send_and_count)
        assert counts == [2 * done for done in range(1, _BARRIER_ROUNDS + 1)]

    @needs(ISOLATES)
    async def test_raising_broadcast_subscriber_does_not_stop_others(self, comm: Any) -> None:
        inbox = Inbox()

        def explode(*_args: Any) -> None:
            raise RuntimeError("broadcast subscriber failed")

        await comm.add_broadcast_subscriber(explode)
        await comm.add_broadcast_subscriber(functools.partial(_record_broadcast, inbox, "ok"))
        assert await comm.broadcast_send("one") is True
        await comm.broadcast_send("two")
        got = await inbox.wait_for(2)
        assert [body for _, body, *_ in got] == ["one", "two"]

    @needs(BATCHES)
    async def test_broadcast_send_many_is_heard_in_order(self, comm: Any) -> None:
        inbox = Inbox()
        for tag in ("a", "b"):
            await comm.add_broadcast_subscriber(functools.partial(_record_broadcast, inbox, tag))
        news = functools.partial(_record_broadcast, inbox, "news")
        await comm.add_broadcast_subscriber(kiwipy.BroadcastFilter(news, subject="news.*"))
        short = [("b0",), ("b1", "me"), ("b2", "me", "news.short")]
        full = [(f"b{n}", f"s{n}", ("news.x", "other")[n % 2], f"c{n}") for n in range(3, 20)]
        assert await comm.broadcast_send_many(short + full) is None
        padded = [(*each, *(None,) * (4 - len(each))) for each in short + full]
        # as in kiwipy 0.9, a subject filter lets broadcasts without a subject through
        heard_by_news = [each for each in padded if each[2] is None or each[2].startswith("news.")]
        got = await inbox.wait_for(2 * len(padded) + len(heard_by_news))
        for tag, expected in (("a", padded), ("b", padded), ("news", heard_by_news)):
            heard = [tuple(rest) for who, *rest in got if who == tag]
            assert heard == expected, (tag, heard)

    @needs(BATCHES)
    async def test_broadcast_send_many_without_subscribers(self, comm: Any) -> None:
        assert await comm.broadcast_send_many([("nobody listens",), ("still nobody",)]) is None

    @needs(BATCHES, ENCODES)
    async def test_broadcast_send_many_sends_nothing_if_one_cannot_be_encoded(
        self, comm: Any
    ) -> None:
        inbox = Inbox()
        await comm.add_broadcast_subscriber(functools.partial(_record_broadcast, inbox, "a"))
        with pytest.raises(kiwipy.EncodeError):
            await comm.broadcast_send_many([("first",), (threading.Lock(),), ("third",)])
        await comm.broadcast_send("after")
        assert [body for _, body, *_ in await inbox.wait_for(1)] == ["after"]

    @needs(BATCHES)
    async def test_broadcast_send_many_sends_nothing_if_an_item_is_malformed(
        self, comm: Any
    ) -> None:
        inbox = Inbox()
        await comm.add_broadcast_subscriber(functools.partial(_record_broadcast, inbox, "a"))
        for bad in ("body", ["body"], (), ("body", "sender", "subject", "id", "extra")):
            with pytest.raises(TypeError):
                await comm.broadcast_send_many([("first",), bad])
        await comm.broadcast_send("after")
        assert [body for _, body, *_ in await inbox.wait_for(1)] == ["after"]

    # Subscriber identifiers

    async def test_removing_unknown_subscribers(self, comm: Any) -> None:
        for remove in (
            comm.remove_rpc_subscriber,
            comm.remove_task_subscriber,
            comm.remove_broadcast_subscriber,
        ):
            with pytest.raises(ValueError):
                await remove("no-such-subscriber")

    async def test_generated_identifiers(self, comm: Any) -> None:
        for add, remove in (
            (comm.add_rpc_subscriber, comm.remove_rpc_subscriber),
            (comm.add_task_subscriber, comm.remove_task_subscriber),
            (comm.add_broadcast_subscriber, comm.remove_broadcast_subscriber),
        ):
            identifiers = [await add(lambda *_args: None) for _ in range(3)]
            assert len(set(identifiers)) == 3
            for identifier in identifiers:
                await remove(identifier)
            with pytest.raises(ValueError):
                await remove(identifiers[0])

    async def test_duplicate_task_and_broadcast_identifiers(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        ident = transport.name("same")
        for add in (comm.add_task_subscriber, comm.add_broadcast_subscriber):
            assert await add(lambda *_args: None, ident) == ident
            with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
                await add(lambda *_args: None, ident)

    # Close

    async def test_close_is_idempotent_and_final(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        ident = await comm.add_rpc_subscriber(lambda _c, msg: msg, transport.name("closing"))
        resolved = await comm.rpc_send(ident, "kept")
        assert await settle(resolved) == "kept"
        await comm.close()
        await comm.close()
        assert comm.is_closed()
        assert resolved.result() == "kept"
        operations: list[Callable[[], Awaitable[Any]]] = [
            lambda: comm.add_rpc_subscriber(lambda _c, msg: msg),
            lambda: comm.remove_rpc_subscriber(ident),
            lambda: comm.add_task_subscriber(lambda _c, task: task),
            lambda: comm.remove_task_subscriber("any"),
            lambda: comm.add_broadcast_subscriber(lambda *_args: None),
            lambda: comm.remove_broadcast_subscriber("any"),
            lambda: comm.task_send(1),
            lambda: comm.rpc_send(ident, 1),
            lambda: comm.broadcast_send(1),
        ]
        for operation in operations:
            with pytest.raises(kiwipy.CommunicatorClosed):
                await operation()

    @needs(QUEUES)
    async def test_close_fails_futures_waiting_for_replies(self, comm: Any) -> None:
        future = await comm.task_send("nobody will answer")
        await comm.close()
        with pytest.raises(kiwipy.CommunicatorClosed):
            await settle(future)

    # Misbehaving subscribers and messages

    @needs(ISOLATES)
    @pytest.mark.parametrize("error", _RAISED, ids=lambda error: error.__name__)
    @pytest.mark.parametrize("kind", ["task", "rpc"])
    async def test_any_exception_a_subscriber_raises_reaches_the_sender(
        self, comm: Any, transport: ContractTransport, kind: str, error: type[BaseException]
    ) -> None:
        """Issue 11 items 2 and 6a: ``StopIteration`` (which an asyncio future refuses),
        ``GeneratorExit`` and every other ``BaseException`` is a ``RemoteException`` naming
        it, and the subscriber keeps serving."""

        def subscriber(_c: Any, msg: Any) -> Any:
            if msg == "explode":
                raise error("boom")
            return f"{msg} ok"

        send = await _subscribe(comm, transport, kind, subscriber)
        with pytest.raises(kiwipy.RemoteException) as info:
            await settle(await send("explode"))
        assert str(info.value.remote_type).endswith(f".{error.__name__}")
        assert await settle(await send("next")) == "next ok"

    @needs(ISOLATES, AWAITS)
    @pytest.mark.parametrize("error", _RAISED, ids=lambda error: error.__name__)
    async def test_any_exception_a_coroutine_subscriber_raises_reaches_the_sender(
        self, comm: Any, transport: ContractTransport, error: type[BaseException]
    ) -> None:
        async def subscriber(_c: Any, msg: Any) -> Any:
            await asyncio.sleep(0)
            if msg == "explode":
                raise error("boom")
            return f"{msg} ok"

        for kind in ("task", "rpc"):
            send = await _subscribe(comm, transport, kind, subscriber)
            with pytest.raises(kiwipy.RemoteException):  # StopIteration: RuntimeError (PEP 479)
                await settle(await send("explode"))
            assert await settle(await send("next")) == "next ok"

    @needs(ISOLATES)
    @pytest.mark.parametrize("error", _RAISED, ids=lambda error: error.__name__)
    async def test_any_exception_of_a_returned_future_reaches_the_sender(
        self, comm: Any, transport: ContractTransport, error: type[BaseException]
    ) -> None:
        for kind in ("task", "rpc"):
            inner = transport.make_future()
            if error is StopIteration and asyncio.isfuture(inner):
                continue  # an asyncio future refuses it: nobody can make one fail with it
            send = await _subscribe(comm, transport, kind, lambda _c, msg, inner=inner: inner)
            level = await settle(await send("later"))
            inner.set_exception(error("boom"))
            with pytest.raises(kiwipy.RemoteException) as info:
                await settle(level)
            assert str(info.value.remote_type).endswith(f".{error.__name__}")

    async def test_a_returned_future_that_is_cancelled_cancels_the_sender_future(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        """kiwipy 0.9's ``cancelled`` reply (its bug B4 left the sender waiting)."""
        for kind in ("task", "rpc"):
            inner = transport.make_future()
            send = await _subscribe(comm, transport, kind, lambda _c, msg, inner=inner: inner)
            level = await settle(await send("x"))
            inner.cancel()
            await asyncio.wait([level], timeout=TIMEOUT)
            assert level.cancelled()

    @pytest.mark.parametrize("kind", ["task", "rpc"])
    async def test_subscriber_raising_kiwipy_cancelled_error_cancels_the_sender_future(
        self, comm: Any, transport: ContractTransport, kind: str
    ) -> None:
        """Issue 11 item 7: kiwipy 0.9's way for a subscriber to cancel (its ``cancelled``
        reply); a cancelled task is final (acknowledged), not delivered again."""
        seen = Inbox()

        def subscriber(_c: Any, msg: Any) -> Any:
            seen.put(msg)
            if msg == "cancel":
                raise kiwipy.CancelledError("not today")
            return f"{msg} ok"

        send = await _subscribe(comm, transport, kind, subscriber)
        future = await send("cancel")
        await asyncio.wait([future], timeout=TIMEOUT)
        assert future.cancelled()
        assert await settle(await send("next")) == "next ok"
        assert seen.items == ["cancel", "next"]

    @needs(ISOLATES)
    @pytest.mark.parametrize("kind", ["task", "rpc"])
    async def test_an_unprintable_exception_reaches_the_sender(
        self, comm: Any, transport: ContractTransport, kind: str
    ) -> None:
        """Issue 11 item 5: building the reply must not fail (``str()`` raising) and leave
        the sender waiting."""

        def subscriber(_c: Any, msg: Any) -> Any:
            if msg == "explode":
                raise _Unprintable
            return f"{msg} ok"

        send = await _subscribe(comm, transport, kind, subscriber)
        with pytest.raises(kiwipy.RemoteException) as info:
            await settle(await send("explode"))
        assert str(info.value.remote_type).endswith("._Unprintable")
        assert await settle(await send("next")) == "next ok"

    @needs(ENCODES)
    @pytest.mark.parametrize("kind", ["task", "rpc"])
    async def test_a_result_whose_encoding_raises_any_exception_reaches_the_sender(
        self, comm: Any, transport: ContractTransport, kind: str
    ) -> None:
        """Issue 11 item 5: a reply that cannot be encoded, whatever the encoder raises, is
        replaced by an error reply."""

        def subscriber(_c: Any, msg: Any) -> Any:
            return _Explosive(a=1) if msg == "explode" else f"{msg} ok"

        send = await _subscribe(comm, transport, kind, subscriber)
        with pytest.raises(kiwipy.RemoteException):
            await settle(await send("explode"))
        assert await settle(await send("next")) == "next ok"

    @needs(SHARED, AWAITS)
    async def test_closing_inside_an_rpc_subscriber_still_ends_the_call(
        self, transport: ContractTransport
    ) -> None:
        """Issue 11 item 6a: ``close()`` returns at once and the call being handled gets its
        reply, not a ``ReplyLost`` after the caller's liveness check."""
        caller, responder = await transport.connect(), await transport.connect()
        native = responder.native

        def close_blocking(_c: Any, msg: Any) -> Any:
            native.close()
            return f"{msg}: bye"

        async def close_async(_c: Any, msg: Any) -> Any:
            await native.disconnect()
            return f"{msg}: bye"

        subscriber = close_blocking if isinstance(responder, _BlockingView) else close_async
        ident = await responder.add_rpc_subscriber(subscriber, transport.name("closer"))
        future = await caller.rpc_send(ident, "close")
        assert await settle(future) == "close: bye"
        assert responder.is_closed()

    @needs(SHARED, AWAITS)
    async def test_a_call_left_unanswered_by_a_closing_subscriber_ends_with_reply_lost(
        self, transport: ContractTransport
    ) -> None:
        """Issue 11 item 6a: a closing communicator stops the calls it is handling after a
        grace; their callers get ``ReplyLost`` at once (also over RabbitMQ: its ``lost``
        reply), not after their liveness check."""
        caller, responder = await transport.connect(), await transport.connect()
        started, release = Inbox(), threading.Event()

        def hang_blocking(_c: Any, msg: Any) -> Any:
            started.put(msg)
            release.wait(TIMEOUT)
            return "too late"

        async def hang_async(_c: Any, msg: Any) -> Any:
            started.put(msg)
            await asyncio.Event().wait()

        hang = hang_blocking if isinstance(responder, _BlockingView) else hang_async
        ident = await responder.add_rpc_subscriber(hang, transport.name("hang"))
        future = await caller.rpc_send(ident, "hang")
        await started.wait_for(1)
        try:
            await responder.close()
            with pytest.raises(kiwipy.ReplyLost, match="closed before it answered"):
                await settle(future)
        finally:
            release.set()

    @needs(ENCODES)
    async def test_unencodable_messages(self, comm: Any, transport: ContractTransport) -> None:
        done = Inbox()
        await comm.add_task_subscriber(lambda _c, task: _put_and_return(done, task, task))
        ident = await comm.add_rpc_subscriber(lambda _c, msg: msg, transport.name("enc"))
        before = await comm.task_send("before")
        with pytest.raises(kiwipy.EncodeError):
            await comm.task_send(threading.Lock())
        with pytest.raises(kiwipy.EncodeError):
            await comm.rpc_send(ident, threading.Lock())
        with pytest.raises(kiwipy.EncodeError):
            await comm.broadcast_send(threading.Lock())
        after = await comm.task_send("after")
        assert [await settle(before), await settle(after)] == ["before", "after"]
        assert sorted(done.items) == ["after", "before"]
        assert await settle(await comm.rpc_send(ident, "still works")) == "still works"

    @needs(ENCODES)
    async def test_unencodable_result(self, comm: Any, transport: ContractTransport) -> None:
        await comm.add_task_subscriber(lambda _c, task: threading.Lock())
        ident = await comm.add_rpc_subscriber(lambda _c, msg: threading.Lock(), transport.name("r"))
        with pytest.raises(kiwipy.RemoteException):
            await settle(await comm.task_send("x"))
        with pytest.raises(kiwipy.RemoteException):
            await settle(await comm.rpc_send(ident, "x"))

    # Naming rules (kiwipy._limits): refused at once, the communicator untouched

    async def _control_round(self, comm: Any, transport: ContractTransport, tag: str) -> None:
        """One task and one RPC succeed within :data:`CONTROL_TIMEOUT` seconds."""

        async def control() -> None:
            ident = await comm.add_rpc_subscriber(lambda _c, msg: msg, transport.name(tag))
            assert await (await comm.rpc_send(ident, "rpc ok")) == "rpc ok"
            await comm.add_task_subscriber(lambda _c, task: task, f"control-{tag}")
            assert await (await comm.task_send("task ok")) == "task ok"

        await asyncio.wait_for(control(), CONTROL_TIMEOUT)

    @needs(NAMES)
    async def test_bad_rpc_identifiers_are_refused_at_once(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        limit = 255 - len("[rpc].")
        bad = ["\u00e9" * 200, "x" * (limit + 1), "", "#", "*", "a.#", "*.b", "a.*.b", "\ud800"]
        for identifier in bad:
            with pytest.raises(kiwipy.InvalidName, match="RPC identifier"):
                await comm.rpc_send(identifier, 1)
            with pytest.raises(kiwipy.InvalidName, match="RPC identifier"):
                await comm.add_rpc_subscriber(lambda _c, msg: msg, identifier)
        await self._control_round(comm, transport, "after-bad-ids")

    @needs(NAMES)
    async def test_rpc_identifiers_at_the_limits_work(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        limit = 255 - len("[rpc].")
        prefix = transport.name("")
        longest = prefix + "\u00e9" * ((limit - len(prefix)) // 2)
        longest += "x" * (limit - len(longest.encode()))
        assert len(longest.encode()) == limit
        for identifier in [longest, transport.name("a#b"), transport.name("x*")]:
            ident = await comm.add_rpc_subscriber(lambda _c, msg: ["got", msg], identifier)
            assert ident == identifier
            assert await settle(await comm.rpc_send(identifier, 1)) == ["got", 1]
        with pytest.raises(kiwipy.InvalidName, match=f"limit of {limit} bytes"):
            await comm.rpc_send(longest + "x", 1)

    @needs(NAMES, BATCHES)
    async def test_rpc_send_many_refuses_a_bad_identifier_before_sending(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        calls = Inbox()
        ident = await comm.add_rpc_subscriber(
            lambda _c, msg: _put_and_return(calls, msg, msg), transport.name("many")
        )
        with pytest.raises(kiwipy.InvalidName):
            await comm.rpc_send_many([(ident, "first"), ("#", "second")])
        await self._control_round(comm, transport, "after-many")
        assert await settle(await comm.rpc_send(ident, "last")) == "last"
        assert calls.items == ["last"]  # nothing of the refused batch was sent

    @needs(NAMES, QUEUES)
    async def test_bad_task_queue_names_are_refused_at_once(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        too_long = transport.name("") + "\u00e9" * 125
        bad = ["", too_long, "amq.kiwipy", "caf\u00e9", "#", transport.name("*"), 42, None]
        for name in bad:
            with pytest.raises(kiwipy.InvalidName, match="task queue name"):
                await comm.task_queue(name)
        await self._control_round(comm, transport, "after-bad-queue")

    @needs(NAMES, QUEUES)
    async def test_task_queue_name_at_the_limit_works(
        self, comm: Any, transport: ContractTransport
    ) -> None:
        limit = 255 - len(".leases")
        name = transport.name("")
        name += "q" * (limit - len(name.encode()))
        queue = await comm.task_queue(name)
        await queue.add_task_subscriber(lambda _c, task: task + 1)
        assert await settle(await queue.task_send(41)) == 42
