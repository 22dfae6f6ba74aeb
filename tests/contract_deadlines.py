"""Deadlines and cancellation (issue 16), part of the contract every transport runs.

:class:`DeadlinesContract` is a base of :class:`tests.contract.CommunicatorContract`; its tests
need the :data:`DEADLINES` capability: ``rpc_send`` and ``task_send`` take ``timeout``, the
caller's future fails with :class:`kiwipy.DeadlineExceeded` when no reply came in time, and a
request found past its deadline is never started (a task is dead-lettered, which the
transport's ``dead_letters`` reader shows).

Import ``tests.contract``, not this module: the two import each other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import pytest

import kiwipy
from tests import contract  # partly initialised while it imports this module: use at run time

__all__ = ("CANCELS_TASKS", "DEADLINES", "DeadlinesContract")

#: The capability flag of these tests.
DEADLINES = "deadlines"
#: Cancelling a task's future keeps a worker from starting it.
CANCELS_TASKS = "cancels-tasks"

#: The deadline of the slow-handler tests, and how late its error may come.
_TIMEOUT = 0.5
_LATE = 1.0
#: Seconds a handler sleeps: much longer than the deadline.
_SLEEP = 3.0


def _needs_deadlines(test: Any) -> Any:
    test.contract_needs = frozenset({DEADLINES})
    return test


def _needs_batches_and_deadlines(test: Any) -> Any:
    test.contract_needs = frozenset({DEADLINES, "batches"})
    return test


def _asyncio_future(future: Any) -> Any:
    """:returns: *future* awaitable on the running loop (a blocking communicator's batch
    gives ``concurrent.futures.Future`` objects)."""
    if isinstance(future, concurrent.futures.Future):
        return asyncio.wrap_future(future)
    return future


def _needs_task_cancels(test: Any) -> Any:
    test.contract_needs = frozenset({DEADLINES, CANCELS_TASKS})
    return test


async def _expect_deadline(future: Any, sent: float) -> float:
    """Wait for *future* to fail with ``DeadlineExceeded``. :returns: seconds since *sent*."""
    with pytest.raises(kiwipy.DeadlineExceeded) as caught:
        await contract.settle(future)
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, kiwipy.TimeoutError)
    return time.monotonic() - sent


def _slow_handler(events: Any) -> Any:
    """A coroutine RPC handler that sleeps :data:`_SLEEP` and puts ``started`` and, when it
    is cancelled, ``cancelled`` into *events*."""

    async def slow(_comm: Any, msg: Any) -> Any:
        events.put("started")
        try:
            await asyncio.sleep(_SLEEP)
        except asyncio.CancelledError:
            events.put("cancelled")
            raise
        return "too late"

    return slow


class DeadlinesContract:
    """Deadlines on every transport (see the module docstring)."""

    @_needs_deadlines
    async def test_rpc_deadline_exceeded(self, comm: Any, transport: Any) -> None:
        started = contract.Inbox()

        async def slow(_comm: Any, msg: Any) -> Any:
            started.put(msg)
            await asyncio.sleep(_SLEEP)  # the slow handler under test, not synchronisation
            return "too late"

        ident = await comm.add_rpc_subscriber(slow, transport.name("slow"))
        sent = time.monotonic()
        future = await comm.call("rpc_send", ident, "hello", timeout=_TIMEOUT)
        elapsed = await _expect_deadline(future, sent)
        assert _TIMEOUT * 0.8 <= elapsed < _TIMEOUT + _LATE
        assert started.items == ["hello"]

    @_needs_deadlines
    async def test_task_deadline_exceeded(self, comm: Any) -> None:
        async def slow(_comm: Any, task: Any) -> Any:
            await asyncio.sleep(_SLEEP)
            return "too late"

        await comm.add_task_subscriber(slow)
        sent = time.monotonic()
        future = await comm.call("task_send", "job", timeout=_TIMEOUT)
        elapsed = await _expect_deadline(future, sent)
        assert _TIMEOUT * 0.8 <= elapsed < _TIMEOUT + _LATE

    @_needs_deadlines
    async def test_reply_in_time_is_unaffected(self, comm: Any, transport: Any) -> None:
        ident = await comm.add_rpc_subscriber(lambda _c, msg: msg * 2, transport.name("quick"))
        await comm.add_task_subscriber(lambda _c, task: task + 1)
        rpc = await comm.call("rpc_send", ident, 21, timeout=contract.TIMEOUT)
        task = await comm.call("task_send", 41, timeout=contract.TIMEOUT)
        assert await contract.settle(rpc) == 42
        assert await contract.settle(task) == 42

    @_needs_deadlines
    async def test_tasks_queued_behind_a_busy_worker_are_never_started(
        self, transport: Any
    ) -> None:
        """Five tasks with a short deadline wait behind one that holds the only prefetch
        slot of the worker; once it is done, none of them runs, and all are dead-lettered."""
        worker, sender = await transport.connect(), await transport.connect()
        name = transport.name("busy")
        started = contract.Inbox()
        hold = transport.make_future()

        def work(_comm: Any, task: Any) -> Any:
            started.put(task)
            return hold if task == "busy" else task

        await (await worker.task_queue(name, prefetch_count=1)).add_task_subscriber(work)
        queue = await sender.task_queue(name)
        busy = await queue.task_send("busy")
        await started.wait_for(1)
        late = [await queue.task_send(i, timeout=0.3) for i in range(5)]
        for future in late:
            with pytest.raises(kiwipy.DeadlineExceeded):
                await contract.settle(future)
        hold.set_result("done")
        assert await contract.settle(await contract.settle(busy)) == "done"
        assert await contract.settle(await queue.task_send("control")) == "control"
        assert started.items == ["busy", "control"], started.items
        assert len(await transport.dead_letters(name)) == 5

    @_needs_deadlines
    async def test_expired_task_is_not_run_by_a_later_worker(self, transport: Any) -> None:
        """A task whose deadline passed while no worker ran is dead-lettered, not run, by
        the worker that comes later."""
        sender = await transport.connect()
        name = transport.name("late")
        queue = await sender.task_queue(name)
        sent = time.monotonic()
        future = await queue.task_send("stale", timeout=_TIMEOUT)
        await _expect_deadline(future, sent)
        # the deadline passed with the task unstarted; a worker comes a second later
        await asyncio.sleep(1.5 - (time.monotonic() - sent))  # the scenario, not a sync
        started = contract.Inbox()
        worker = await transport.connect()
        worker_queue = await worker.task_queue(name)
        await worker_queue.add_task_subscriber(lambda _c, task: started.put(task) or task)
        assert await contract.settle(await queue.task_send("fresh")) == "fresh"
        assert started.items == ["fresh"], started.items
        assert len(await transport.dead_letters(name)) == 1

    @_needs_deadlines
    async def test_handler_sees_its_deadline(self, comm: Any, transport: Any) -> None:
        seen = contract.Inbox()
        ident = await comm.add_rpc_subscriber(
            lambda _c, msg: seen.put((msg, kiwipy.deadline())), transport.name("sees")
        )
        await comm.add_task_subscriber(lambda _c, task: seen.put((task, kiwipy.deadline())))
        await contract.settle(await comm.call("rpc_send", ident, "rpc", timeout=30))
        await contract.settle(await comm.call("task_send", "task", timeout=30))
        await contract.settle(await comm.rpc_send(ident, "plain"))
        left = dict(await seen.wait_for(3))
        assert 25 < left["rpc"] <= 30
        assert 25 < left["task"] <= 30
        assert left["plain"] is None
        assert kiwipy.deadline() is None

    @_needs_deadlines
    async def test_coroutine_handler_is_cancelled_at_the_deadline(
        self, comm: Any, transport: Any
    ) -> None:
        events = contract.Inbox()

        slow = _slow_handler(events)

        ident = await comm.add_rpc_subscriber(slow, transport.name("cancelled"))
        sent = time.monotonic()
        future = await comm.call("rpc_send", ident, "x", timeout=_TIMEOUT)
        await _expect_deadline(future, sent)
        assert await events.wait_for(2, timeout=_LATE + _TIMEOUT) == ["started", "cancelled"]

    @_needs_deadlines
    async def test_rpcs_queued_behind_a_busy_handler_are_never_started(
        self, comm: Any, transport: Any
    ) -> None:
        """A thread communicator runs one subscriber's calls one at a time: five calls with
        a short deadline waiting behind a busy one are not started once it is done."""
        if not isinstance(transport, contract.BlockingTransport):
            pytest.skip("asyncio communicator: RPC handlers run concurrently, none waits")
        started = contract.Inbox()
        release = threading.Event()

        def work(_comm: Any, msg: Any) -> Any:
            started.put(msg)
            if msg == "busy":
                release.wait(contract.TIMEOUT)  # until the test has seen the deadlines pass
            return msg

        ident = await comm.add_rpc_subscriber(work, transport.name("busy"))
        busy = await comm.rpc_send(ident, "busy")
        await started.wait_for(1)
        late = [await comm.call("rpc_send", ident, i, timeout=0.3) for i in range(5)]
        for future in late:
            with pytest.raises(kiwipy.DeadlineExceeded):
                await contract.settle(future)
        release.set()
        assert await contract.settle(busy) == "busy"
        assert await contract.settle(await comm.rpc_send(ident, "control")) == "control"
        assert started.items == ["busy", "control"], started.items

    @_needs_deadlines
    async def test_cancelling_an_rpc_cancels_a_coroutine_handler(
        self, comm: Any, transport: Any
    ) -> None:
        events = contract.Inbox()

        slow = _slow_handler(events)

        caller = await transport.connect()
        ident = await comm.add_rpc_subscriber(slow, transport.name("cancel"))
        future = await caller.native_call("rpc_send", ident, "x")  # cancel() must reach it
        await events.wait_for(1)
        cancelled_at = time.monotonic()
        assert future.cancel()
        assert await events.wait_for(2, timeout=_LATE) == ["started", "cancelled"]
        assert time.monotonic() - cancelled_at < _LATE
        # the responder goes on working
        echo = await comm.add_rpc_subscriber(lambda _c, msg: msg, transport.name("echo"))
        assert await contract.settle(await caller.rpc_send(echo, "y")) == "y"

    @_needs_task_cancels
    async def test_a_cancelled_task_is_never_started(self, transport: Any) -> None:
        """A task whose future was cancelled while it waited behind a busy worker is not
        started once the worker is free."""
        worker, sender = await transport.connect(), await transport.connect()
        name = transport.name("cancelled")
        started = contract.Inbox()
        hold = transport.make_future()

        def work(_comm: Any, task: Any) -> Any:
            started.put(task)
            return hold if task == "busy" else task

        await (await worker.task_queue(name, prefetch_count=1)).add_task_subscriber(work)
        queue = await sender.task_queue(name)
        busy = await queue.task_send("busy")
        await started.wait_for(1)
        native = getattr(queue, "native", None)  # a blocking queue: cancel its real future
        if native is None:
            doomed = await queue.task_send("doomed")
        else:
            doomed = await asyncio.to_thread(native.task_send, "doomed")
        assert doomed.cancel()
        # Sent after the cancel by the same sender, so once it is confirmed the cancel is
        # out too (on RabbitMQ: published first on the same channel, and its notice routed).
        control = await queue.task_send("control")
        hold.set_result("done")
        assert await contract.settle(await contract.settle(busy)) == "done"
        assert await contract.settle(control) == "control"
        assert started.items == ["busy", "control"], started.items

    @_needs_batches_and_deadlines
    async def test_batch_sends_give_each_call_its_deadline(self, comm: Any, transport: Any) -> None:
        async def slow(_comm: Any, msg: Any) -> Any:
            await asyncio.sleep(_SLEEP)
            return "too late"

        ident = await comm.add_rpc_subscriber(slow, transport.name("slow-batch"))
        await comm.add_task_subscriber(slow)
        sent = time.monotonic()
        calls = await comm.call("rpc_send_many", [(ident, 1), (ident, 2)], call_timeout=_TIMEOUT)
        tasks = await comm.call("task_send_many", [1, 2], call_timeout=_TIMEOUT)
        for future in [*calls, *tasks]:
            elapsed = await _expect_deadline(_asyncio_future(future), sent)
            assert elapsed < _TIMEOUT + _LATE
