"""A thread communicator of the shared core sends tasks and RPCs on the caller's thread
(``task_send_now``, ``rpc_send_now``: :mod:`kiwipy.core._sending`), so a send does not wait
for its loop; the reply is still matched on the loop, where the registration was posted
before the broker took the message. And the SQLite broker's acks, written by its pump, are
written before a closing connection's tasks are given back (rule 3 of
:mod:`kiwipy.sqlite._tasks`)."""

from __future__ import annotations

import os
import pathlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import kiwipy
from kiwipy import memory
from kiwipy.core import DEFAULT_TASK_QUEUE
from kiwipy.sqlite._store import Store

from .._waits import block_loop, wait_until

#: Seconds any wait here may take (every one ends much sooner when things work).
WAIT = 5.0


@pytest.fixture(params=["memory", "sqlite"])
def pair(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[tuple[Any, Any]]:
    """A sender and a receiver thread communicator on one broker."""
    if request.param == "memory":
        name = f"direct-{uuid.uuid4().hex}"
        url = f"memory://{name}"
    else:
        url = f"sqlite:///{tmp_path / 'direct.db'}"
    sender, receiver = kiwipy.connect(url), kiwipy.connect(url)
    try:
        yield sender, receiver
    finally:
        sender.close()
        receiver.close()
        if request.param == "memory":
            memory.drop_broker(name)


def _block(comm: Any) -> threading.Event:
    """Keep *comm*'s loop thread busy until the returned event is set."""
    return block_loop(comm.loop(), WAIT)


def test_sends_do_not_wait_for_the_senders_loop(pair: tuple[Any, Any]) -> None:
    sender, receiver = pair
    receiver.add_task_subscriber(lambda _c, task: task * 2)
    receiver.task_queue("named").add_task_subscriber(lambda _c, task: task * 3)
    receiver.add_rpc_subscriber(lambda _c, msg: msg + 1, "adder")
    named = sender.task_queue("named")
    release = _block(sender)
    try:
        # through the loop, each would wait for it, past the call timeout
        task = sender.task_send(21)
        other = named.task_send(2)
        call = sender.rpc_send("adder", 1)
        assert sender.task_send("quiet", no_reply=True) is None
        # the replies are matched on the sender's loop: not before it is free
        assert not task.done() and not other.done() and not call.done()
    finally:
        release.set()
    assert task.result(WAIT) == 42
    assert other.result(WAIT) == 6
    assert call.result(WAIT) == 2


def test_an_unroutable_rpc_raises_on_the_spot_and_leaves_nothing_waiting(
    pair: tuple[Any, Any],
) -> None:
    sender, _ = pair
    release = _block(sender)
    try:
        with pytest.raises(kiwipy.UnroutableError):
            sender.rpc_send("nobody-holds-this", 1)
    finally:
        release.set()
    # the registration posted before the send is taken back after it
    wait_until(lambda: sender.core._sender.waiting == 0, "no reply waited for", WAIT)


def test_a_task_cancelled_before_its_registration_is_not_run(pair: tuple[Any, Any]) -> None:
    sender, receiver = pair
    release = _block(sender)
    try:
        first = sender.task_send("cancelled")
        assert first.cancel()
    finally:
        release.set()
    # the registration finds its future cancelled: the broker is told before anything else
    wait_until(lambda: sender.core._sender.waiting == 0, "the cancel handled", WAIT)
    sender.add_broadcast_subscriber(lambda *_: None)  # one more turn of the sender's loop
    ran: list[Any] = []
    receiver.add_task_subscriber(lambda _c, task: ran.append(task))
    sender.task_send("second").result(WAIT)
    assert ran == ["second"]


def test_sends_on_a_closed_communicator_raise(pair: tuple[Any, Any]) -> None:
    sender, _ = pair
    sender.close()
    with pytest.raises(kiwipy.CommunicatorClosed):
        sender.task_send(1)
    with pytest.raises(kiwipy.CommunicatorClosed):
        sender.rpc_send("anyone", 1)


def test_sqlite_acks_are_written_before_a_closing_connection_gives_tasks_back(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "acks.db"
    url = f"sqlite:///{path}"
    sender, worker = kiwipy.connect(url), kiwipy.connect(url)
    store = Store(str(path))
    try:
        # the pump writes no ack: the one below waits until the connection closes
        tasks = worker.core.broker._tasks
        monkeypatch.setattr(tasks, "write_acks", lambda: None)
        worker.add_task_subscriber(lambda _c, task: task)
        assert sender.task_send("done").result(WAIT) == "done"
        ready, unsettled, _, _ = store.queues.queue_stats(DEFAULT_TASK_QUEUE)[DEFAULT_TASK_QUEUE]
        assert (ready, unsettled) == (0, 1)  # replied, its ack not written yet
        worker.close()
        stats = store.queues.queue_stats(DEFAULT_TASK_QUEUE)[DEFAULT_TASK_QUEUE]
        assert stats[:2] == (0, 0)  # acked, not given back
    finally:
        sender.close()
        worker.close()
        store.close()


def test_sqlite_acks_are_written_by_the_pump(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "acks.db"
    url = f"sqlite:///{path}"
    sender, worker = kiwipy.connect(url), kiwipy.connect(url)
    store = Store(str(path))
    try:
        worker.add_task_subscriber(lambda _c, task: task)
        for future in [sender.task_send(n) for n in range(20)]:
            future.result(WAIT)

        def gone() -> bool:
            stats = store.queues.queue_stats(DEFAULT_TASK_QUEUE)[DEFAULT_TASK_QUEUE]
            return stats[:2] == (0, 0)

        wait_until(gone, "every task acknowledged in the file", WAIT)
    finally:
        sender.close()
        worker.close()
        store.close()


def test_sqlite_sends_from_many_short_lived_threads_do_not_leak_files(
    tmp_path: pathlib.Path,
) -> None:
    """Each thread that sends opens its own connections to the file; those of threads that
    ended are closed when another thread opens its own."""
    comm = kiwipy.connect(f"sqlite:///{tmp_path / 'threads.db'}")
    try:
        comm.task_send(0, no_reply=True)
        before = _open_files()
        for n in range(100):
            thread = threading.Thread(target=comm.task_send, args=(n,), kwargs={"no_reply": True})
            thread.start()
            thread.join()
        # two connections per thread were kept until the communicator closed: 200 more
        assert _open_files() - before < 10
    finally:
        comm.close()


def _open_files() -> int:
    """:returns: how many files this process has open (``/dev/fd``: Linux and macOS)."""
    return len(os.listdir("/dev/fd"))
