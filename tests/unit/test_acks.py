"""The batched ``basic.ack`` writes (:mod:`kiwipy.rmq.receive._acks`) keep no channel alive."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from kiwipy.rmq.receive import _acks


class FakeChannel:
    """What :func:`_acks.ack` uses of an aiormq channel: a writer queue nobody reads (the
    connection died before its writer took the batch)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.loop = asyncio.get_running_loop()
        self.write_queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=10)

    def create_future(self) -> asyncio.Future[Any]:
        return self.loop.create_future()


async def test_a_dead_channel_with_an_unwritten_batch_is_collectable() -> None:
    refs = []
    for number in range(1, 4):  # connect/close cycles
        channel = FakeChannel(number)
        _acks.ack(channel, 1)
        _acks.ack(channel, 2)  # joins the batch still in the queue
        assert channel.write_queue.qsize() == 1
        refs.append(weakref.ref(channel))
        del channel
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]


async def test_acks_join_the_batch_until_the_writer_takes_it() -> None:
    channel = FakeChannel(7)
    first = _acks.ack(channel, 1)
    assert _acks.ack(channel, 2) is first
    batch = channel.write_queue.get_nowait()
    assert batch.payload == _acks.ack_frame(7, 1) + _acks.ack_frame(7, 2)
    later = _acks.ack(channel, 3)  # the batch was taken: a new one
    assert later is not first
    assert channel.write_queue.get_nowait().payload == _acks.ack_frame(7, 3)
    batch.drain()
    assert first.done()
