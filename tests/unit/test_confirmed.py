"""Waiting for the confirm of a publish written directly (``kiwipy.rmq.connection._amqp.confirmed``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiormq import exceptions as amqp_errors

from kiwipy.rmq.connection import _amqp


async def test_the_outcome_is_the_confirm_s() -> None:
    loop = asyncio.get_running_loop()
    acked: asyncio.Future[Any] = loop.create_future()
    nacked: asyncio.Future[Any] = loop.create_future()
    waiting = [_amqp.confirmed(acked, 5), _amqp.confirmed(nacked, 5)]
    acked.set_result("ack")
    nacked.set_exception(amqp_errors.DeliveryError(None, None))
    assert await waiting[0] == "ack"
    with pytest.raises(amqp_errors.DeliveryError):
        await waiting[1]


async def test_a_channel_closed_without_an_error_is_a_connection_reset() -> None:
    confirm: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    waiting = _amqp.confirmed(confirm, 5)
    confirm.set_exception(Exception)  # what aiormq sets on the futures of a channel we close
    with pytest.raises(ConnectionResetError):
        await waiting
    assert isinstance(ConnectionResetError(), _amqp.LINK_ERRORS)  # a publish retries it


async def test_it_times_out_and_leaves_the_confirm_to_finish() -> None:
    confirm: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    with pytest.raises(asyncio.TimeoutError):
        await _amqp.confirmed(confirm, 0.01)
    assert not confirm.done()
    confirm.set_exception(amqp_errors.DeliveryError(None, None))  # late: retrieved, no warning


async def test_cancelling_the_waiter_leaves_the_confirm_to_finish() -> None:
    confirm: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    waiter = _amqp.confirmed(confirm, 5)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not confirm.done()
    confirm.set_result("ack")
