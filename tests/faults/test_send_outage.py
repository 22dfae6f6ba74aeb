"""No silent loss on send: every send is confirmed and delivered, or raises.

The sender talks to the shared broker through a proxy that cuts or refuses its connection;
the receiving side is connected directly, so what it gets is what the broker took.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

import aiormq
import pytest

import kiwipy
from kiwipy import rmq

from ._scenario import SHARED_URL, Events, Names, Tally, report, wait_until
from .proxy import TcpProxy

WAIT = 15.0
pytestmark = pytest.mark.integration


class Cutter:
    """Cuts the proxy *times* times, every *every* seconds once the sender is back."""

    def __init__(self, proxy: TcpProxy, events: Events, times: int, every: float) -> None:
        self.proxy, self.events, self.times, self.every = proxy, events, times, every
        self.recoveries: list[float] = []

    async def run(self) -> None:
        for _ in range(self.times):
            await asyncio.sleep(self.every)
            cut_at = time.monotonic()
            self.proxy.cut()
            back = await self.events.wait_for("reconnected", WAIT, cut_at)
            self.recoveries.append(round(back - cut_at, 3))


class Outcomes:
    """What happened to each send."""

    def __init__(self) -> None:
        self.confirmed: dict[str, Any] = {}  # id -> reply future (or True)
        self.raised: dict[str, BaseException] = {}

    async def send(self, ident: str, send: Any) -> None:
        try:
            self.confirmed[ident] = await send()
        except kiwipy.ConnectionLost as exc:
            self.raised[ident] = exc


async def test_cut_while_sending_tasks_in_a_loop(proxy: TcpProxy) -> None:
    """Tasks sent in a loop (8 at a time) while the sender's connection is cut 4 times: every
    send is confirmed or raises; every confirmed task is delivered and its reply arrives."""
    names = Names()
    sender = await rmq.async_connect(proxy.url, **names.options())
    worker = await rmq.async_connect(SHARED_URL, **names.options())
    events, delivered, outcomes = Events(), Tally(), Outcomes()
    sender.add_connection_callback(events)
    try:
        await worker.add_task_subscriber(lambda _c, task: delivered.add(task) or task)
        cutter = Cutter(proxy, events, times=4, every=0.4)
        cutting = asyncio.ensure_future(cutter.run())
        ids = [f"t{n}" for n in range(400)]
        for start in range(0, len(ids), 8):
            batch = ids[start : start + 8]
            await asyncio.gather(
                *(outcomes.send(i, lambda i=i: sender.task_send(i)) for i in batch)
            )
            if start % 80 == 0:
                await asyncio.sleep(0.05)  # spread the sends over the cuts
        await asyncio.wait_for(cutting, WAIT * 2)
        replies = await asyncio.wait_for(asyncio.gather(*outcomes.confirmed.values()), WAIT)
        await wait_until(lambda: not delivered.missing(outcomes.confirmed), WAIT, "delivery")
        assert replies == list(outcomes.confirmed)
        assert len(outcomes.confirmed) + len(outcomes.raised) == len(ids)
        raised_delivered = [i for i in outcomes.raised if i in delivered.seen]
        report(
            "cut-while-sending-tasks",
            sent=len(ids),
            confirmed=len(outcomes.confirmed),
            raised=len(outcomes.raised),
            delivered=len(delivered.seen),
            replies=len(replies),
            lost=len(delivered.missing(outcomes.confirmed)),
            duplicates=delivered.duplicates,
            raised_but_delivered=len(raised_delivered),
            why_raised=sorted({str(exc)[:120] for exc in outcomes.raised.values()}),
            cuts=cutter.times,
            recovery_s=cutter.recoveries,
        )
        assert events.count("disconnected") == cutter.times
    finally:
        await sender.disconnect()
        await worker.disconnect()


async def test_cut_while_sending_rpcs_and_broadcasts(proxy: TcpProxy) -> None:
    """RPCs and broadcasts are never sent twice: one in flight when the link is cut raises
    ConnectionLost (outcome unknown); every confirmed RPC is answered and every confirmed
    broadcast heard."""
    names = Names()
    sender = await rmq.async_connect(proxy.url, **names.options())
    peer = await rmq.async_connect(SHARED_URL, **names.options())
    events, answered_by_peer, heard = Events(), Tally(), Tally()
    sender.add_connection_callback(events)
    calls, broadcasts = Outcomes(), Outcomes()
    try:
        await peer.add_rpc_subscriber(lambda _c, msg: answered_by_peer.add(msg) or msg, "echo")
        await peer.add_broadcast_subscriber(lambda _c, body, *_: heard.add(body))
        cutter = Cutter(proxy, events, times=3, every=0.5)
        cutting = asyncio.ensure_future(cutter.run())
        for n in range(300):
            ident = f"m{n}"
            send = calls.send if n % 2 else broadcasts.send
            call = (
                (lambda i=ident: sender.rpc_send("echo", i))
                if n % 2
                else (lambda i=ident: sender.broadcast_send(i))
            )
            await asyncio.gather(send(ident, call), asyncio.sleep(0.004))
        await asyncio.wait_for(cutting, WAIT * 2)
        answers = await asyncio.wait_for(asyncio.gather(*calls.confirmed.values()), WAIT)
        assert answers == list(calls.confirmed)
        await wait_until(lambda: not heard.missing(broadcasts.confirmed), WAIT, "broadcasts")
        report(
            "cut-while-sending-rpcs-broadcasts",
            rpc_sent=len(calls.confirmed) + len(calls.raised),
            rpc_confirmed=len(calls.confirmed),
            rpc_answered=len(answers),
            rpc_raised=len(calls.raised),
            rpc_duplicates=answered_by_peer.duplicates,
            broadcasts_sent=len(broadcasts.confirmed) + len(broadcasts.raised),
            broadcasts_confirmed=len(broadcasts.confirmed),
            broadcasts_heard=len(heard.seen),
            broadcasts_raised=len(broadcasts.raised),
            lost=len(heard.missing(broadcasts.confirmed)),
            duplicates=heard.duplicates,
            recovery_s=cutter.recoveries,
        )
        assert answered_by_peer.duplicates == 0 and heard.duplicates == 0
    finally:
        await sender.disconnect()
        await peer.disconnect()


async def test_sends_during_an_outage_wait_for_the_reconnection(proxy: TcpProxy) -> None:
    """Sends made while the broker is unreachable wait for the reconnection (and for every
    subscriber to be restored), then go: all confirmed, all delivered."""
    names = Names()
    options = names.options(reconnect_max_interval=0.3)
    sender = await rmq.async_connect(proxy.url, **options)
    peer = await rmq.async_connect(SHARED_URL, **names.options())
    events, delivered = Events(), Tally()
    sender.add_connection_callback(events)
    try:
        await peer.add_task_subscriber(lambda _c, task: delivered.add(task) or task)
        await peer.add_rpc_subscriber(lambda _c, msg: msg, "peer")
        await sender.task_send("declare", no_reply=True)
        proxy.refuse(True)
        proxy.cut()
        await events.wait_for("disconnected", WAIT)
        began = time.monotonic()
        sends = [asyncio.ensure_future(sender.task_send(f"w{n}")) for n in range(20)]
        rpc = asyncio.ensure_future(sender.rpc_send("peer", "during"))
        # The sends wait through several reconnection attempts (one per 0.3 s at most,
        # reconnect_max_interval), each refused by the proxy.
        refused = proxy.refused
        await wait_until(lambda: proxy.refused >= refused + 3, WAIT, "3 reconnection attempts")
        assert not any(send.done() for send in sends)
        proxy.refuse(False)
        futures = await asyncio.wait_for(asyncio.gather(*sends), WAIT)
        waited = time.monotonic() - began
        results = await asyncio.wait_for(asyncio.gather(*futures), WAIT)
        assert results == [f"w{n}" for n in range(20)]
        assert await asyncio.wait_for(await rpc, WAIT) == "during"
        report(
            "sends-wait-for-reconnection",
            sent=21,
            confirmed=21,
            delivered=len(delivered.seen) - 1,
            lost=0,
            duplicates=delivered.duplicates,
            outage_s=1.5,
            waited_s=round(waited, 3),
        )
    finally:
        proxy.refuse(False)
        await sender.disconnect()
        await peer.disconnect()


async def test_sends_raise_when_the_connection_stays_down(proxy: TcpProxy) -> None:
    """Past ``recovery_timeout`` sends raise ConnectionLost; none of them is delivered
    later (a send that raised was not taken)."""
    names = Names()
    sender = await rmq.async_connect(proxy.url, **names.options(recovery_timeout=1.0))
    peer = await rmq.async_connect(SHARED_URL, **names.options())
    events, delivered = Events(), Tally()
    sender.add_connection_callback(events)
    try:
        await peer.add_task_subscriber(lambda _c, task: delivered.add(task))
        await sender.task_send("declare", no_reply=True)
        proxy.refuse(True)
        proxy.cut()
        await events.wait_for("disconnected", WAIT)
        began = time.monotonic()
        outcomes = Outcomes()
        await asyncio.gather(
            *(outcomes.send(f"d{n}", lambda n=n: sender.task_send(f"d{n}")) for n in range(10))
        )
        took = time.monotonic() - began
        assert len(outcomes.raised) == 10 and 0.9 < took < 2.5
        proxy.refuse(False)
        await events.wait_for("reconnected", WAIT)
        await sender.task_send("after", no_reply=True)
        await wait_until(lambda: "after" in delivered.seen, WAIT, "after")
        assert not [i for i in outcomes.raised if i in delivered.seen]
        report(
            "sends-raise-when-down",
            sent=10,
            confirmed=0,
            raised=len(outcomes.raised),
            delivered_later=0,
            raised_after_s=round(took, 3),
        )
    finally:
        proxy.refuse(False)
        await sender.disconnect()
        await peer.disconnect()


async def test_a_nacked_task_is_retried_until_recovery_timeout_then_raises(caplog) -> None:
    """The broker nacks publishes to a full queue with ``x-overflow: reject-publish``: the
    send is retried on fresh channels with backoff (a quorum queue electing a leader nacks
    for a while, docs/cluster.md) until ``recovery_timeout``, then raises PublishNacked; it
    never reports success for a message the broker refused."""
    caplog.set_level(logging.INFO, logger="kiwipy.rmq.communicator")
    names = Names()
    raw = await aiormq.connect(SHARED_URL)
    comm: Optional[rmq.RmqCommunicator] = None
    try:
        channel = await raw.channel()
        arguments = {"x-max-length": 1, "x-overflow": "reject-publish", "x-expires": 30000}
        await channel.queue_declare(names.task_queue, durable=True, arguments=arguments)
        comm = await rmq.async_connect(SHARED_URL, **names.options(recovery_timeout=1.0))
        first = await comm.task_send("fits", no_reply=True)
        assert first is None
        began = time.monotonic()
        with pytest.raises(kiwipy.PublishNacked):
            await comm.task_send("refused", no_reply=True)
        took = time.monotonic() - began
        assert 0.9 < took < 2.5  # retried until recovery_timeout, not given up at once
        messages = [r.getMessage() for r in caplog.records]
        assert sum("was nacked" in m for m in messages) == 1  # said once per send
        gave_up = [m for m in messages if "still nacked after" in m]
        assert len(gave_up) == 1
        attempts = int(gave_up[0].split("still nacked after ")[1].split()[0])
        assert attempts >= 4
        got = await channel.basic_get(names.task_queue, no_ack=True)
        assert b"fits" in got.body
        await comm.task_send("fits now", no_reply=True)
        report(
            "nacked-send", sent=3, confirmed=2, nacked=1, attempts=attempts,
            raised_after_s=round(took, 2), reported_success=2,
        )  # fmt: skip
    finally:
        if comm is not None:
            await comm.disconnect()
        await raw.close()
