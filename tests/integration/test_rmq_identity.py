"""RPC identities unique across the broker, and queues that do not outlive their use (B13)."""

from __future__ import annotations

import asyncio

import aiormq
import pytest

import kiwipy
from kiwipy import rmq

WAIT = 5.0


async def test_rpc_identifier_unique_across_communicators(communicator, communicator2) -> None:
    await communicator.add_rpc_subscriber(lambda _c, _m: "first", "unique")
    with pytest.raises(kiwipy.DuplicateSubscriberIdentifier, match="another communicator"):
        await communicator2.add_rpc_subscriber(lambda _c, _m: "second", "unique")
    # the failed attempt left the second communicator working
    await communicator2.add_rpc_subscriber(lambda _c, _m: "other", "other")
    assert await (await communicator2.rpc_send("unique", None)) == "first"
    assert await (await communicator.rpc_send("other", None)) == "other"


async def test_identifier_released_by_remove_and_by_close(rmq_uri, names, communicator2):
    first = await rmq.async_connect(rmq_uri, **names.options())
    await first.add_rpc_subscriber(lambda _c, _m: 1, "released")
    await first.remove_rpc_subscriber("released")
    await communicator2.add_rpc_subscriber(lambda _c, _m: 2, "released")
    await communicator2.remove_rpc_subscriber("released")
    await first.add_rpc_subscriber(lambda _c, _m: 3, "released")
    await first.disconnect()
    await communicator2.add_rpc_subscriber(lambda _c, _m: 4, "released")
    assert await asyncio.wait_for(await communicator2.rpc_send("released", None), WAIT) == 4


async def test_removed_rpc_queue_is_deleted(communicator, raw_channel, names) -> None:
    await communicator.add_rpc_subscriber(lambda _c, m: m, "b13")
    await communicator.remove_rpc_subscriber("b13")
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
        await raw_channel.queue_declare(f"{names.message_exchange}.rpc.b13", passive=True)


async def test_broadcast_queue_has_ttl_and_expiry(communicator, rmq_uri) -> None:
    """B13: the broadcast queue carries x-expires (redeclaring with these args succeeds on
    the owning connection's view; another connection sees it as exclusive)."""
    await communicator.add_broadcast_subscriber(lambda *a: None, "b")
    subscriber = await communicator.get_message_subscriber()
    assert subscriber._queue_arguments == {"x-message-ttl": 66000, "x-expires": 60000}
    connection = await aiormq.connect(rmq_uri)
    try:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelLockedResource):
            await channel.queue_declare(subscriber._broadcasts.queue, passive=True)
    finally:
        await connection.close()


async def test_clean_close_deletes_the_reply_queue(rmq_uri, names, raw_channel) -> None:
    comm = await rmq.async_connect(rmq_uri, **names.options())
    publisher = await comm.get_message_publisher()
    reply_queue = publisher._replies.name
    await comm.disconnect()
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
        await raw_channel.queue_declare(reply_queue, passive=True)
