"""The private broker stopped (cleanly, or killed) and started again with tasks queued: the
communicators reconnect by themselves, restore every subscriber, and every task is drained,
its reply reaching the requester (whose durable reply queue outlived the restart)."""

from __future__ import annotations

import asyncio
import time

import pytest

from kiwipy import rmq

from ._scenario import Events, Names, Tally, report, wait_until
from .broker import PrivateBroker

WAIT = 30.0
TASKS = 200
PREFETCH = 5
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_broker_restart_with_tasks_queued(private_broker: PrivateBroker, how: str) -> None:
    names = Names(testing_mode=False)  # nothing may expire while the broker is down
    options = names.options(reconnect_max_interval=1.0)
    worker = await rmq.async_connect(
        private_broker.url,
        **names.options(task_prefetch_count=PREFETCH, reconnect_max_interval=1.0),
    )
    requester = await rmq.async_connect(private_broker.url, **options)
    events, done, heard = Events(), Tally(), Tally()
    worker.add_connection_callback(events)
    requester.add_connection_callback(events)
    gate = asyncio.Event()

    taken: list[str] = []

    async def work(_c, task):
        taken.append(task)
        await gate.wait()
        done.add(task)
        return task

    loop = asyncio.get_running_loop()
    try:
        await worker.add_task_subscriber(work)
        await worker.add_rpc_subscriber(lambda _c, msg: msg, "survivor")
        await worker.add_broadcast_subscriber(lambda _c, body, *_: heard.add(body))
        ids = [f"r{n}" for n in range(TASKS)]
        futures = [await requester.task_send(i) for i in ids]
        await wait_until(lambda: len(taken) >= PREFETCH, WAIT, "the worker takes its prefetch")
        down_at = time.monotonic()
        await loop.run_in_executor(None, getattr(private_broker, how))
        await loop.run_in_executor(None, private_broker.start)
        up_at = time.monotonic()
        await wait_until(lambda: events.count("reconnected") >= 2, WAIT, "both reconnected")
        reconnected = max(at for at, name, _ in events.log if name == "reconnected") - up_at
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(*futures), WAIT)
        drained = time.monotonic() - up_at
        assert results == ids
        assert not done.missing(ids)
        assert await asyncio.wait_for(await requester.rpc_send("survivor", 1), WAIT) == 1
        await requester.broadcast_send("after the restart")
        await wait_until(lambda: "after the restart" in heard.seen, WAIT, "broadcast")
        report(
            f"broker-{how}-restart",
            sent=TASKS,
            confirmed=TASKS,
            delivered=len(done.seen),
            replies=len(results),
            lost=len(done.missing(ids)),
            duplicates=done.duplicates,
            broker_down_s=round(up_at - down_at, 2),
            reconnected_after_broker_up_s=round(reconnected, 3),
            drained_after_broker_up_s=round(drained, 3),
            disconnected_events=events.count("disconnected"),
        )
        assert events.count("disconnected") == 2  # one per communicator, not per attempt
    finally:
        gate.set()
        await worker.disconnect()
        await requester.disconnect()
