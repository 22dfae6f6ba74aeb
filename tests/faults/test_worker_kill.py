"""A worker *process* killed with SIGKILL in the middle of its tasks: they go to another
worker, none is lost; an RPC subscriber killed while a call waits ends that call with
ReplyLost; an RPC to an identifier nobody holds fails at once."""

from __future__ import annotations

import asyncio
import time

import pytest

import kiwipy
from kiwipy import rmq

from ._scenario import SHARED_URL, CompletionLog, Names, WorkerProcess, report, wait_until

WAIT = 20.0
pytestmark = pytest.mark.integration


async def test_sigkill_mid_task_hands_the_tasks_to_another_worker(tmp_path) -> None:
    names = Names()
    options = names.options(task_prefetch_count=2)
    log = CompletionLog(tmp_path / "completions")
    first = WorkerProcess(SHARED_URL, options, log.path)
    second = None
    requester = await rmq.async_connect(SHARED_URL, **names.options())
    try:
        await first.ready()
        ids = [f"k{n}" for n in range(24)]
        futures = [await requester.task_send({"id": i, "sleep": 0.3}) for i in ids]
        await wait_until(lambda: bool(log.in_hand(first.pid)), WAIT, "the first worker starts")
        second = WorkerProcess(SHARED_URL, options, log.path)
        await second.ready()
        await asyncio.sleep(0.5)
        in_hand = log.in_hand(first.pid)
        killed_at = time.monotonic()
        first.kill()
        results = await asyncio.wait_for(asyncio.gather(*futures), WAIT)
        drained = time.monotonic() - killed_at
        done = log.done()
        assert results == ids
        assert not done.missing(ids)
        by_second = {i for e, i, pid in log.lines() if e == "done" and pid == second.pid}
        assert in_hand <= by_second  # what the killed worker held was run by the other
        report(
            "worker-sigkill",
            sent=len(ids),
            confirmed=len(ids),
            delivered=len(done.seen),
            replies=len(results),
            lost=len(done.missing(ids)),
            duplicates=done.duplicates,
            in_hand_when_killed=len(in_hand),
            rerun_by_other=len(in_hand & by_second),
            drained_after_kill_s=round(drained, 3),
        )
        assert done.duplicates <= 2  # at most the prefetch: finished but not acknowledged
    finally:
        first.stop()
        if second is not None:
            second.stop()
        await requester.disconnect()


async def test_rpc_subscriber_killed_mid_call_ends_the_call_with_reply_lost(tmp_path) -> None:
    """B16: the caller notices that the subscriber's identity queue is gone and ends the
    call within about two ``rpc_check_interval`` periods, instead of waiting forever."""
    names = Names()
    log = CompletionLog(tmp_path / "rpc")
    responder = WorkerProcess(SHARED_URL, names.options(), log.path, mode="rpc", rpc_id="doomed")
    interval = 1.0
    caller = await rmq.async_connect(SHARED_URL, **names.options(rpc_check_interval=interval))
    try:
        await responder.ready()
        quick = await caller.rpc_send("doomed", {"id": "quick", "sleep": 0})
        assert await asyncio.wait_for(quick, WAIT) == "quick"
        slow = [await caller.rpc_send("doomed", {"id": f"slow{n}", "sleep": 60}) for n in range(3)]
        await wait_until(lambda: len(log.in_hand(responder.pid)) == 3, WAIT, "calls running")
        await asyncio.sleep(interval * 1.5)  # calls that stay alive while the subscriber is
        assert not any(each.done() for each in slow)
        killed_at = time.monotonic()
        responder.kill()
        outcomes = await asyncio.wait_for(asyncio.gather(*slow, return_exceptions=True), WAIT)
        ended_after = time.monotonic() - killed_at
        assert all(isinstance(each, kiwipy.ReplyLost) for each in outcomes), outcomes
        assert caller.pending_replies == 0
        with pytest.raises(kiwipy.UnroutableError):
            await caller.rpc_send("doomed", {"id": "late"})
        report(
            "rpc-subscriber-sigkill",
            calls_waiting=3,
            ended_with_reply_lost=len(outcomes),
            check_interval_s=interval,
            ended_after_kill_s=round(ended_after, 3),
            later_call="UnroutableError",
        )
        assert ended_after <= 2 * interval + 1.0
    finally:
        responder.stop()
        await caller.disconnect()


async def test_rpc_to_an_identifier_nobody_holds(tmp_path) -> None:
    """Nobody holds the identifier: every call raises UnroutableError from ``rpc_send``
    itself, nothing waits, and the communicator goes on working."""
    names = Names()
    comm = await rmq.async_connect(SHARED_URL, **names.options())
    try:
        began = time.monotonic()
        failures = 0
        for n in range(20):
            with pytest.raises(kiwipy.UnroutableError):
                await comm.rpc_send(f"nobody-{n % 4}", n)
            failures += 1
        took = time.monotonic() - began
        assert comm.pending_replies == 0
        await comm.add_rpc_subscriber(lambda _c, msg: msg, "somebody")
        assert await asyncio.wait_for(await comm.rpc_send("somebody", 7), WAIT) == 7
        report(
            "rpc-to-nobody",
            calls=20,
            unroutable=failures,
            waiting_afterwards=0,
            mean_ms=round(took / 20 * 1000, 2),
        )
    finally:
        await comm.disconnect()
