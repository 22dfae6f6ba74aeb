"""A stalled connection (a black hole, not a reset) is noticed within about two heartbeat
intervals by the session's watchdog, reset, and recovered like any other loss. aiormq alone
notices after ``(heartbeat + 1) × 3`` seconds and leaks the socket."""

from __future__ import annotations

import asyncio
import time

import pytest

import kiwipy
from kiwipy import rmq

from ._scenario import SHARED_URL, Events, Names, Tally, report, wait_until
from .proxy import TcpProxy
from .test_infrastructure import close_leaked_transports

WAIT = 15.0
pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("query", "options", "limit"),
    [
        ("?heartbeat=2", {}, 2.0),  # the heartbeat sets the watchdog's limit
        ("?heartbeat=60", {"stall_timeout": 1.0}, 1.0),  # or the option does
    ],
    ids=["heartbeat", "stall_timeout"],
)
async def test_stall_is_detected_and_recovered(
    proxy: TcpProxy, query: str, options: dict, limit: float
) -> None:
    """The link stalls for 1.5 × (the limit) + 2 s: the watchdog reports ``stalled`` within
    1.5 × the limit (+ scheduling slack), resets the socket (nothing leaks), and once the
    link flows again every subscriber is restored; a task sent during the stall is
    delivered."""
    names = Names()
    comm = await rmq.async_connect(
        proxy.url + query, **names.options(reconnect_max_interval=0.5, **options)
    )
    peer = await rmq.async_connect(SHARED_URL, **names.options())
    events, delivered = Events(), Tally()
    comm.add_connection_callback(events)
    try:
        await comm.add_rpc_subscriber(lambda _c, msg: msg, "stalled")
        await comm.add_task_subscriber(lambda _c, task: delivered.add(task) or task)
        assert await asyncio.wait_for(await peer.rpc_send("stalled", 1), WAIT) == 1
        stalled_at = time.monotonic()
        proxy.stall()
        sending = asyncio.ensure_future(comm.task_send("sent during the stall"))
        detected = await events.wait_for("stalled", WAIT, stalled_at) - stalled_at
        await events.wait_for("disconnected", WAIT, stalled_at)
        await asyncio.sleep(max(0.0, 1.5 * limit + 2 - detected))
        resumed_at = time.monotonic()
        proxy.resume()
        recovered = await events.wait_for("reconnected", WAIT, resumed_at) - resumed_at
        # the broker may still hold the RPC identity for the reset connection a moment longer
        # (its own heartbeat check): the subscriber takes it back as soon as it is free
        answer = await _rpc_when_routable(peer, "stalled", 2)
        identity_back = time.monotonic() - resumed_at
        assert answer == 2
        reply = await asyncio.wait_for(sending, WAIT)
        assert await asyncio.wait_for(reply, WAIT) == "sent during the stall"
        await peer.task_send("after", no_reply=True)
        await wait_until(lambda: "after" in delivered.seen, WAIT, "task after the stall")
        await comm.disconnect()
        leaked = close_leaked_transports(proxy.port)
        report(
            f"stall-{'option' if options else 'heartbeat'}",
            limit_s=limit,
            detected_s=round(detected, 3),
            aiormq_alone_s=(limit + 1) * 3 if not options else 183,
            recovery_after_resume_s=round(recovered, 3),
            rpc_identity_back_after_resume_s=round(identity_back, 3),
            sent_during_stall=1,
            delivered=len(delivered.seen),
            lost=0,
            duplicates=delivered.duplicates,
            leaked_sockets=leaked,
            events=[(round(at - stalled_at, 2), name) for at, name, _ in events.log],
        )
        assert detected <= 1.5 * limit + 0.75
        assert leaked == 0
        assert events.count("stalled") == 1
    finally:
        proxy.resume()
        await comm.disconnect()
        await peer.disconnect()


async def _rpc_when_routable(comm: rmq.RmqCommunicator, identifier: str, msg: int) -> int:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            future = await comm.rpc_send(identifier, msg)
        except kiwipy.UnroutableError:
            assert time.monotonic() < deadline, "the RPC subscriber never came back"
            await asyncio.sleep(0.05)
        else:
            return int(await asyncio.wait_for(future, WAIT))
