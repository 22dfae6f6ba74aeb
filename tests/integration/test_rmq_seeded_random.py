"""The user's code may seed Python's global ``random`` (reproducible simulations do): the
communicator must not draw anything that has to be unique from it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from kiwipy import rmq


@pytest.fixture
def seeded() -> Iterator[None]:
    """Put the global ``random`` back as it was after the test."""
    state = random.getstate()
    yield
    random.setstate(state)


async def test_subscribers_added_after_the_same_seed(
    seeded: None, communicator: rmq.RmqCommunicator, names
) -> None:
    # Each consumer needs a tag unique on its channel; aiormq's default tag comes from the
    # global random, so the same seed gave the same tag (DuplicateConsumerTag).
    idents = [f"{names.prefix}.seeded{n}" for n in range(3)]
    for ident in idents:
        random.seed(0)
        await communicator.add_rpc_subscriber(lambda _c, msg, ident=ident: (ident, msg), ident)
    random.seed(0)
    await communicator.add_task_subscriber(lambda _c, task: task * 2)
    answers = [await communicator.rpc_send(ident, 1) for ident in idents]
    assert await asyncio.wait_for(asyncio.gather(*answers), 5) == [(i, 1) for i in idents]
    assert await asyncio.wait_for(await communicator.task_send(21), 5) == 42
