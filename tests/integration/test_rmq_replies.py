"""RPC replies over the real broker that cannot go out as they are (issue 11 item 5): the
caller's future must end at once, not at its own timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import kiwipy
from kiwipy import rmq
from kiwipy.rmq.receive import _handlers
from kiwipy.rmq.receive._replies import send_reply

WAIT = 5.0


async def test_a_refused_rpc_reply_is_replaced_by_a_lost_reply(
    communicator: rmq.RmqCommunicator,
    communicator2: rmq.RmqCommunicator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker refusing the reply (a ``basic.nack``, simulated here for the first reply
    only) ends the caller's future with the error, and the subscriber keeps serving."""
    refused: list[bytes] = []

    async def refuse_first(*args: Any) -> Any:
        if not refused:
            refused.append(args[3])
            raise kiwipy.PublishNacked("the broker refused the reply")
        return await send_reply(*args)

    monkeypatch.setattr(_handlers, "send_reply", refuse_first)
    ident = await communicator.add_rpc_subscriber(lambda _c, msg: f"{msg} done", "refused")
    future = await communicator2.rpc_send(ident, "first")
    with pytest.raises(kiwipy.ReplyLost, match="reply could not be sent"):
        await asyncio.wait_for(future, WAIT)
    assert refused  # the real reply was attempted first
    assert await asyncio.wait_for(await communicator2.rpc_send(ident, "next"), WAIT) == "next done"
