"""Recovery restores everything: after a TCP cut every kind of subscriber receives again, a
consumer the broker cancels comes back, and an RPC identity taken over while its holder was
away is not held twice."""

from __future__ import annotations

import asyncio
import logging
import time

import aiormq
import pytest

import kiwipy
from kiwipy import rmq

from ._scenario import SHARED_URL, Events, Names, Tally, report, wait_until
from .proxy import TcpProxy

WAIT = 10.0
pytestmark = pytest.mark.integration


async def _round(peer: rmq.RmqCommunicator, tasks: Tally, named: Tally, heard: Tally, n: int):
    """One of each message to every restored subscriber; :returns: RPC answers."""
    await peer.task_send(f"task-{n}", no_reply=True)
    queue = await peer.task_queue(f"{peer._options['task_queue']}.named")
    await queue.task_send(f"named-{n}", no_reply=True)
    answer = await asyncio.wait_for(await peer.rpc_send("restored", n), WAIT)
    await peer.broadcast_send(f"broadcast-{n}")
    await wait_until(lambda: f"task-{n}" in tasks.seen, WAIT, "task delivered")
    await wait_until(lambda: f"named-{n}" in named.seen, WAIT, "named task delivered")
    await wait_until(lambda: f"broadcast-{n}" in heard.seen, WAIT, "broadcast delivered")
    return answer


async def test_cuts_restore_every_subscriber(proxy: TcpProxy, caplog) -> None:
    """Three cuts in a row: after each, the task subscriber, a named task queue's subscriber,
    an RPC subscriber and a broadcast subscriber all receive again, with no user action;
    each outage is reported (and logged) exactly once."""
    caplog.set_level(logging.INFO, logger="kiwipy.rmq.communicator")
    names = Names()
    comm = await rmq.async_connect(proxy.url, **names.options())
    peer = await rmq.async_connect(SHARED_URL, **names.options())
    events = Events()
    comm.add_connection_callback(events)
    tasks, named, heard = Tally(), Tally(), Tally()
    try:
        await comm.add_task_subscriber(lambda _c, task: tasks.add(task))
        queue = await comm.task_queue(f"{names.task_queue}.named")
        await queue.add_task_subscriber(lambda _c, task: named.add(task))
        await comm.add_rpc_subscriber(lambda _c, n: n * 10, "restored")
        await comm.add_broadcast_subscriber(lambda _c, body, *_: heard.add(body))
        recoveries = []
        for n in range(3):
            assert await _round(peer, tasks, named, heard, n) == n * 10
            cut_at = time.monotonic()
            proxy.cut()
            recoveries.append(await events.wait_for("reconnected", WAIT, cut_at) - cut_at)
        assert await _round(peer, tasks, named, heard, 3) == 30
        assert (events.count("disconnected"), events.count("reconnected")) == (3, 3)
        logged = [r for r in caplog.records if r.getMessage().endswith(" reconnected")]
        assert len(logged) == 3
        assert (tasks.duplicates, named.duplicates, heard.duplicates) == (0, 0, 0)
        report(
            "cut-restores-subscribers",
            cuts=3,
            rounds=4,
            delivered_per_kind=len(tasks.seen),
            lost=0,
            duplicates=0,
            recovery_s=[round(r, 3) for r in recoveries],
            proxy_connections=proxy.accepted,
        )
        assert max(recoveries) < 5.0
    finally:
        await comm.disconnect()
        await peer.disconnect()


async def test_consumers_cancelled_by_the_broker_are_restored(tmp_path) -> None:
    """Deleting the queues a communicator consumes makes the broker cancel its consumers
    (``basic.cancel``, which aiormq alone would ignore): they are noticed, reported, and
    restored (queues declared again); a task whose reply was awaited on a deleted reply queue
    is sent again once the queue is declared again, so its reply still arrives (it may run
    twice: a duplicate is allowed, a lost reply is not)."""
    names = Names()
    worker = await rmq.async_connect(SHARED_URL, **names.options())
    sender = await rmq.async_connect(SHARED_URL, **names.options())
    raw = await aiormq.connect(SHARED_URL)
    events, done = Events(), Tally()
    worker.add_connection_callback(events)
    sender.add_connection_callback(events)
    try:
        release = asyncio.Event()

        async def work(_c, task):
            if task == "held":
                await release.wait()
            done.add(task)
            return task

        await worker.add_task_subscriber(work)
        assert await asyncio.wait_for(await sender.task_send("before"), WAIT) == "before"
        channel = await raw.channel()
        began = time.monotonic()
        await channel.queue_delete(names.task_queue)
        await events.wait_for("consumer-cancelled", WAIT)
        # the worker declares the queue again and consumes it: new tasks run
        first = await _send_when_routable(sender, "after-0")
        results = [first] + [await sender.task_send(f"after-{n}") for n in range(1, 5)]
        assert [await asyncio.wait_for(r, WAIT) for r in results] == [
            f"after-{n}" for n in range(5)
        ]
        task_recovery = time.monotonic() - began
        # the sender's reply queue deleted while a reply is awaited
        held = await sender.task_send("held")
        reply_queue = (await sender.get_message_publisher())._replies.name
        began = time.monotonic()
        await channel.queue_delete(reply_queue)
        await wait_until(lambda: events.count("consumer-cancelled") == 2, WAIT, "reply consumer")
        release.set()
        assert await asyncio.wait_for(held, WAIT) == "held"
        again = await sender.task_send("again")
        assert await asyncio.wait_for(again, WAIT) == "again"
        reply_recovery = time.monotonic() - began
        assert events.count("consumer-cancelled") == 2
        report(
            "broker-cancelled-consumers",
            cancelled=events.count("consumer-cancelled"),
            tasks_sent_after=5,
            delivered_after=5,
            lost=0,
            task_queue_recovery_s=round(task_recovery, 3),
            reply_queue_recovery_s=round(reply_recovery, 3),
        )
    finally:
        await raw.close()
        await worker.disconnect()
        await sender.disconnect()


async def test_rpc_identity_taken_while_away_is_not_held_twice(proxy: TcpProxy) -> None:
    """A holder cut off (and kept off) loses its identity to another communicator at once;
    when it comes back its re-registration fails cleanly: the identity stays with the new
    holder, the old subscriber is removed and ``subscriber-lost`` is reported, and its other
    subscribers are restored."""
    names = Names()
    options = names.options(recovery_timeout=2.0)
    # the holder retries for max(recovery_timeout, two heartbeats) = 4 s before giving up
    holder = await rmq.async_connect(proxy.url + "?heartbeat=2", **options)
    other = await rmq.async_connect(SHARED_URL, **options)
    events = Events()
    holder.add_connection_callback(events)
    try:
        await holder.add_rpc_subscriber(lambda _c, _m: "old", "pid-42")
        await holder.add_rpc_subscriber(lambda _c, _m: "kept", "pid-43")
        with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
            await other.add_rpc_subscriber(lambda _c, _m: "new", "pid-42")
        proxy.refuse(True)
        cut_at = time.monotonic()
        proxy.cut()
        await events.wait_for("disconnected", WAIT)
        released = await _register_when_free(other, "pid-42")
        proxy.refuse(False)
        lost_at = await events.wait_for("subscriber-lost", WAIT + 10)
        assert "pid-42" in events.detail("subscriber-lost")
        answers = [
            await asyncio.wait_for(await other.rpc_send("pid-42", n), WAIT) for n in range(10)
        ]
        assert answers == ["new"] * 10
        assert await asyncio.wait_for(await other.rpc_send("pid-43", None), WAIT) == "kept"
        report(
            "rpc-identity-after-cut",
            released_after_cut_s=round(released - cut_at, 3),
            subscriber_lost_after_s=round(lost_at - cut_at, 3),
            calls=10,
            answered_by_new_holder=10,
            answered_by_old_holder=0,
        )
    finally:
        proxy.refuse(False)
        await holder.disconnect()
        await other.disconnect()


async def _send_when_routable(comm: rmq.RmqCommunicator, task: str):
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return await comm.task_send(task)
        except kiwipy.UnroutableError:
            assert time.monotonic() < deadline, "the task queue was never declared again"
            await asyncio.sleep(0.05)


async def _register_when_free(comm: rmq.RmqCommunicator, identifier: str) -> float:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            await comm.add_rpc_subscriber(lambda _c, _m: "new", identifier)
        except kiwipy.DuplicateSubscriberIdentifier:
            assert time.monotonic() < deadline, "the identity was never released"
            await asyncio.sleep(0.05)
        else:
            return time.monotonic()


def test_thread_facade_reports_events_and_waits_for_reconnection(proxy: TcpProxy) -> None:
    """The blocking facade: connection events reach its callback; a send during an outage
    waits for the reconnection past ``async_task_timeout`` and succeeds; one that outlasts
    ``recovery_timeout`` raises ConnectionLost, not a TimeoutError."""
    names = Names()
    options = names.options(
        async_task_timeout=1.0, recovery_timeout=3.0, reconnect_max_interval=0.5
    )
    comm = rmq.RmqThreadCommunicator.connect(proxy.url, **options)
    worker = rmq.RmqThreadCommunicator.connect(SHARED_URL, **names.options())
    events = Events()
    try:
        comm.add_connection_callback(events)
        worker.add_task_subscriber(lambda _c, task: task)
        comm.task_send("declare", no_reply=True)
        proxy.refuse(True)
        proxy.cut()
        _wait_sync(lambda: events.count("disconnected") == 1)
        threading_timer = _later(1.8, lambda: proxy.refuse(False))
        began = time.monotonic()
        future = comm.task_send("waited")
        waited = time.monotonic() - began
        assert future.result(WAIT) == "waited"
        assert waited > 1.0  # longer than async_task_timeout: the facade did not cut it short
        threading_timer.join()
        _wait_sync(lambda: events.count("reconnected") == 1)
        proxy.refuse(True)
        proxy.cut()
        began = time.monotonic()
        with pytest.raises(kiwipy.ConnectionLost, match="not restored within 3"):
            comm.task_send("never")
        failed_after = time.monotonic() - began
        assert 2.0 < failed_after < 4.5
        report(
            "thread-facade-send-during-outage",
            waited_then_sent_s=round(waited, 3),
            raised_connection_lost_after_s=round(failed_after, 3),
            events=events.names(),
        )
    finally:
        proxy.refuse(False)
        comm.close()
        worker.close()


def _wait_sync(condition, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _later(delay: float, action):
    import threading

    timer = threading.Timer(delay, action)
    timer.start()
    return timer
