"""The thread facade's time limits: a call's own timeout always wins over the facade's call
timeout (``async_task_timeout``), and kiwipy 0.9's defaults hold (issue 11, item 9)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import kiwipy
from kiwipy import memory
from kiwipy._thread import ThreadCommunicator

#: The facade's call timeout in these tests: much shorter than the waits asked for.
CALL_TIMEOUT = 0.2


@pytest.fixture
def uri(unique_name: str) -> Iterator[str]:
    yield f"memory://{unique_name}"
    memory.drop_broker(unique_name)


def facade(uri: str, timeout: float) -> ThreadCommunicator:
    """A thread facade over a memory core with call timeout *timeout*."""

    async def create() -> memory.AsyncMemoryCommunicator:
        core = memory.AsyncMemoryCommunicator(memory.get_broker(memory.broker_name(uri)))
        await core.connect()
        return core

    return ThreadCommunicator(create, timeout=timeout)


@pytest.fixture
def comm(uri: str) -> Iterator[ThreadCommunicator]:
    communicator = facade(uri, CALL_TIMEOUT)
    yield communicator
    communicator.close()


def test_next_task_waits_its_own_timeout_not_the_call_timeout(comm: ThreadCommunicator) -> None:
    queue = comm.task_queue("empty")
    own = 3 * CALL_TIMEOUT
    started = time.monotonic()
    with pytest.raises(kiwipy.QueueEmpty):  # not the facade's TimeoutError
        with queue.next_task(timeout=own):
            pass
    assert time.monotonic() - started >= own


def test_next_task_without_timeout_raises_queue_empty_at_once(uri: str) -> None:
    comm = facade(uri, timeout=5.0)
    try:
        queue = comm.task_queue("empty")
        started = time.monotonic()
        with pytest.raises(kiwipy.QueueEmpty):
            with queue.next_task():
                pass
        # kiwipy 0.9 looks once and does not wait; far below the 5 s call timeout
        assert time.monotonic() - started < 1.0
    finally:
        comm.close()


def test_next_task_without_timeout_takes_a_waiting_task(comm: ThreadCommunicator) -> None:
    queue = comm.task_queue("one")
    result = queue.task_send("here")
    with queue.next_task() as task:
        assert task is not None
        task.process().set_result("done")
    assert result is not None
    assert result.result(5.0) == "done"


def test_next_task_fail_false_yields_none_after_its_own_timeout(
    comm: ThreadCommunicator,
) -> None:
    queue = comm.task_queue("empty")
    with queue.next_task(timeout=2 * CALL_TIMEOUT, fail=False) as task:
        assert task is None
