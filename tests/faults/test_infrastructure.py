"""Tests of the fault-injection tools themselves: the proxy and the private broker."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import uuid
from typing import Callable, Optional, Union

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from .broker import PrivateBroker, QueueInfo, amqp_handshake
from .proxy import TcpProxy


def unique(purpose: str) -> str:
    return f"kiwitest.{purpose}.{uuid.uuid4().hex[:8]}"


class CloseWatch:
    """Records when and why a connection or channel closed."""

    def __init__(self, closable: Union[AbstractConnection, AbstractChannel]) -> None:
        self.at = 0.0
        self.exc: Optional[BaseException] = None
        self._event = asyncio.Event()
        closable.close_callbacks.add(self._on_close)

    def _on_close(self, _sender: object, exc: Optional[BaseException]) -> None:
        self.at, self.exc = time.monotonic(), exc
        self._event.set()

    @property
    def closed(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float) -> Optional[BaseException]:
        await asyncio.wait_for(self._event.wait(), timeout)
        return self.exc


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def publish(
    channel: AbstractChannel, queue: str, body: bytes, persistent: bool = False
) -> None:
    """Publish and wait for the broker's confirm, so the message is in the queue on return."""
    mode = aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
    message = aio_pika.Message(body, delivery_mode=mode)
    await channel.default_exchange.publish(message, routing_key=queue)


@pytest.mark.integration
async def test_proxy_forwards_publish_and_consume(proxy: TcpProxy) -> None:
    name = unique("forward")
    async with await aio_pika.connect(proxy.url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, exclusive=True)
        await publish(channel, name, b"through the proxy")
        message = await queue.get(timeout=5)
        await message.ack()
        assert message.body == b"through the proxy"
        assert (proxy.accepted, proxy.open_connections, proxy.refused) == (1, 1, 0)
    await wait_until(lambda: proxy.open_connections == 0)


@pytest.mark.integration
async def test_cut_resets_the_connection_at_once(proxy: TcpProxy) -> None:
    connection = await aio_pika.connect(proxy.url)
    watch = CloseWatch(connection)
    began = time.monotonic()
    proxy.cut()
    exc = await watch.wait(timeout=5)
    assert watch.at - began < 1.0
    assert "reset" in str(exc).lower()
    assert proxy.open_connections == 0
    await connection.close()
    async with await aio_pika.connect(proxy.url):  # the proxy itself keeps accepting
        assert (proxy.accepted, proxy.open_connections) == (2, 1)


@pytest.mark.integration
async def test_refuse_rejects_new_connections_only(proxy: TcpProxy) -> None:
    async with await aio_pika.connect(proxy.url) as kept:
        proxy.refuse(True)
        with pytest.raises(ConnectionError):
            await aio_pika.connect(proxy.url, timeout=5)
        assert (proxy.refused, proxy.open_connections) == (1, 1)
        channel = await kept.channel()  # the established connection still works
        await channel.declare_queue(unique("refuse"), exclusive=True)
        proxy.refuse(False)
        async with await aio_pika.connect(proxy.url):
            assert (proxy.accepted, proxy.open_connections) == (2, 2)


async def test_proxy_to_a_dead_port_resets_clients(proxy_to: Callable[..., TcpProxy]) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead_port = placeholder.getsockname()[1]
    proxy = proxy_to(dead_port)
    with pytest.raises(ConnectionError):
        await aio_pika.connect(proxy.url, timeout=5)
    assert (proxy.accepted, proxy.refused, proxy.open_connections) == (0, 1, 0)


@pytest.mark.integration
async def test_resume_delivers_what_was_sent_during_a_stall(proxy: TcpProxy) -> None:
    name = unique("stall-resume")
    async with await aio_pika.connect(proxy.url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, exclusive=True)
        proxy.stall()
        publishing = asyncio.ensure_future(publish(channel, name, b"held back"))
        await asyncio.sleep(0.5)
        assert not publishing.done()  # no confirm can come back through a stalled proxy
        proxy.resume()
        await asyncio.wait_for(publishing, 5)
        message = await queue.get(timeout=5)
        await message.ack()
        assert message.body == b"held back"


def close_leaked_transports(port: int) -> int:
    """Close client transports still connected to ``port``; returns how many there were.

    aiormq (6.9) never closes the socket of a connection it declares stuck, and its
    ResourceWarning would surface, as an error, in whichever later test the GC runs in.
    """
    leaked = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, asyncio.Transport)
        and not obj.is_closing()
        and (obj.get_extra_info("peername") or ("", 0))[1] == port
    ]
    for transport in leaked:
        transport.close()
    return len(leaked)


@pytest.mark.integration
async def test_stall_is_detected_by_heartbeats(proxy: TcpProxy) -> None:
    connection = await aio_pika.connect(proxy.url + "?heartbeat=1")
    watch = CloseWatch(connection)
    began = time.monotonic()
    proxy.stall()
    await watch.wait(timeout=15)  # the lower bound below says it did not close at once
    # aiormq's grace period is (heartbeat + 1) * 3 = 6 s for heartbeat=1
    assert 1.0 <= watch.at - began <= 8.0
    assert (proxy.accepted, proxy.open_connections) == (1, 1)  # a black hole keeps sockets open
    await connection.close()
    close_leaked_transports(proxy.port)
    proxy.resume()  # the broker and the client gave up on the link; their EOFs now end it
    await wait_until(lambda: proxy.open_connections == 0)


@pytest.mark.slow
async def test_durable_queue_and_persistent_message_survive_restart(
    private_broker: PrivateBroker,
) -> None:
    name = unique("durable")
    async with await aio_pika.connect(private_broker.url) as connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True)
        await publish(channel, name, b"persistent", persistent=True)
        await publish(channel, name, b"transient")
    assert QueueInfo(name, 2, 0) in private_broker.list_queues()
    old_pid = private_broker.pid
    private_broker.restart()
    assert private_broker.pid not in (None, old_pid)
    assert QueueInfo(name, 1, 0) in private_broker.list_queues()
    async with await aio_pika.connect(private_broker.url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True)
        message = await queue.get(timeout=5)
        await message.ack()
        assert message.body == b"persistent"
        await queue.delete()


@pytest.mark.slow
async def test_kill_drops_clients_at_once(private_broker: PrivateBroker) -> None:
    connection = await aio_pika.connect(private_broker.url)
    watch = CloseWatch(connection)
    began = time.monotonic()
    try:
        private_broker.kill()
        await watch.wait(timeout=5)
        assert watch.at - began < 2.0
        assert not amqp_handshake(private_broker.amqp_port)
        assert private_broker.pid is not None and not private_broker.running
    finally:
        private_broker.start()
    assert amqp_handshake(private_broker.amqp_port)


@pytest.mark.slow
async def test_consumer_timeout_closes_the_channel(timeout_broker: PrivateBroker) -> None:
    name = unique("consumer-timeout")
    async with await aio_pika.connect(timeout_broker.url) as connection:
        channel = await connection.channel()
        watch = CloseWatch(channel)
        queue = await channel.declare_queue(name, exclusive=True)
        delivered: asyncio.Queue[float] = asyncio.Queue()

        async def hold(_message: aio_pika.abc.AbstractIncomingMessage) -> None:
            delivered.put_nowait(time.monotonic())  # and never ack

        await queue.consume(hold)
        await publish(await connection.channel(), name, b"slow task")
        delivered_at = await asyncio.wait_for(delivered.get(), 5)
        exc = await watch.wait(timeout=15)
        assert 3.0 <= watch.at - delivered_at <= 6.0
        assert "PRECONDITION_FAILED" in str(exc)
        assert "delivery acknowledgement on channel" in str(exc)
        assert "Timeout value used: 3000 ms" in str(exc)
        assert not connection.is_closed  # only the channel was closed
        again = await (await connection.channel()).get_queue(name)
        message = await again.get(timeout=5)
        await message.ack()
        assert (message.body, message.redelivered) == (b"slow task", True)
