"""One reconnection smoke test through a TCP proxy (the full fault suite is in tests/faults)."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

import kiwipy
from kiwipy import rmq

try:
    from faults.proxy import TcpProxy
except ImportError:  # pragma: no cover - depends on how pytest set sys.path
    from tests.faults.proxy import TcpProxy

WAIT = 10.0


@pytest.fixture
def proxy(rmq_uri):
    with TcpProxy(target_port=5672) as started:
        yield started


class Recorder:
    """Records connection events; ``wait_for`` one of them."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, event: str) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, event: str) -> None:
        async def until() -> None:
            while event not in self.events:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), WAIT)


async def test_subscribers_restored_and_reply_kept_after_a_cut(proxy, communicator, names):
    """After the link is cut, every subscriber receives again, and a reply sent while the
    requester was reconnecting still reaches it (its reply queue outlived the connection)."""
    url = f"{proxy.url}?reconnect_interval=0.2"
    comm = await rmq.async_connect(url, **names.options())
    events = Recorder()
    comm.add_connection_callback(events)
    try:
        release = asyncio.Event()

        async def slow_worker(_c, task):
            await release.wait()
            return f"{task} done"

        await communicator.add_task_subscriber(slow_worker)
        pending = await comm.task_send("during the cut")
        await comm.add_rpc_subscriber(lambda _c, m: m * 2, "survivor")
        got = asyncio.Event()
        await comm.add_broadcast_subscriber(lambda *a: got.set(), "listener")
        queue = await comm.task_queue(f"{names.prefix}.restored")
        await queue.add_task_subscriber(lambda _c, t: t + 1)

        proxy.cut()
        await events.wait_for("disconnected")
        release.set()  # the reply is published while the requester is away
        await events.wait_for("reconnected")

        assert await asyncio.wait_for(pending, WAIT) == "during the cut done"
        assert await asyncio.wait_for(await communicator.rpc_send("survivor", 21), WAIT) == 42
        await communicator.broadcast_send("hello again")
        await asyncio.wait_for(got.wait(), WAIT)
        other = await communicator.task_queue(f"{names.prefix}.restored")
        assert await asyncio.wait_for(await other.task_send(1), WAIT) == 2
        assert await asyncio.wait_for(await comm.task_send("after"), WAIT) == "after done"
        assert events.events.count("disconnected") == 1
        assert events.events.count("reconnected") == 1
    finally:
        await comm.disconnect()


async def test_replies_fail_when_the_connection_stays_lost(proxy, names) -> None:
    """B16 (liveness seam): once the connection is not back within ``recovery_timeout``,
    waiting futures fail with ConnectionLost instead of hanging, and sends raise it."""
    url = f"{proxy.url}?reconnect_interval=0.2"
    comm = await rmq.async_connect(url, **names.options(recovery_timeout=0.5))
    events = Recorder()
    comm.add_connection_callback(events)
    try:
        waiting = await comm.task_send("nobody takes it")
        proxy.refuse(True)
        proxy.cut()
        await events.wait_for("lost")
        with pytest.raises(kiwipy.ConnectionLost):
            await asyncio.wait_for(waiting, WAIT)
        with pytest.raises(kiwipy.ConnectionLost):
            await comm.task_send("while down")
        proxy.refuse(False)
        await events.wait_for("reconnected")
        await comm.add_task_subscriber(lambda _c, task: f"{task} ok")
        assert await asyncio.wait_for(await comm.task_send("back"), WAIT) == "back ok"
    finally:
        await comm.disconnect()


async def test_plain_connection_loss_fails_waiting_replies(rmq_uri, names) -> None:
    comm = await rmq.async_connect(rmq_uri, aio_pika.connect, **names.options())
    try:
        waiting = await comm.task_send("nobody takes it")
        await comm._connection.transport.connection.close()
        with pytest.raises(kiwipy.ConnectionLost):
            await asyncio.wait_for(waiting, WAIT)
    finally:
        await comm.disconnect()


async def test_connected_and_event_details_follow_an_outage(proxy, names) -> None:
    """``connected()`` is false while the connection is away (aio-pika's ``is_closed`` is
    not), and every event carries a ``detail`` saying what happened."""
    url = f"{proxy.url}?reconnect_interval=0.2"
    comm = await rmq.async_connect(url, **names.options())
    events = Recorder()
    comm.add_connection_callback(events)
    try:
        assert comm.connected()
        proxy.refuse(True)
        proxy.cut()
        await events.wait_for("disconnected")
        assert not comm.connected()
        proxy.refuse(False)
        await events.wait_for("reconnected")
        assert comm.connected()
        [disconnected] = [e for e in events.events if e == "disconnected"]
        assert "reset" in disconnected.detail.lower()
    finally:
        await comm.disconnect()
    assert not comm.connected()
