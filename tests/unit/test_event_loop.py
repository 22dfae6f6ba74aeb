"""The thread facade's private loop: uvloop's where it is installed, asyncio's on request
(``KIWIPY_EVENT_LOOP``), and a clear error for a value that names neither."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator

import pytest

import kiwipy
from kiwipy import memory
from kiwipy._portal import LOOP_ENV, new_loop
from tests._ci import require

WAIT = 5.0

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


@pytest.fixture
def uri(unique_name: str) -> Iterator[str]:
    yield f"memory://{unique_name}"
    memory.drop_broker(unique_name)


def _runs_on(uri: str, loop_module: str) -> None:
    """A thread communicator on *uri* runs its loop from *loop_module* and answers a task,
    an RPC and a broadcast."""
    comm = kiwipy.connect(uri)
    try:
        assert type(comm.loop()).__module__.split(".")[0] == loop_module  # type: ignore[attr-defined]
        _round_trip(comm)
    finally:
        comm.close()


def _round_trip(comm: kiwipy.Communicator) -> None:
    """A task, an RPC and a broadcast through the facade, each answered."""
    heard: list[object] = []
    comm.add_task_subscriber(lambda _comm, task: task * 2)
    comm.add_rpc_subscriber(lambda _comm, msg: msg + 1, "adder")
    comm.add_broadcast_subscriber(lambda _comm, body, *_: heard.append(body))
    assert comm.task_send(21).result(WAIT) == 42
    assert comm.rpc_send("adder", 1).result(WAIT) == 2
    assert comm.broadcast_send("hello") is True
    assert heard == ["hello"]  # the thread facade's send waits for its own subscribers


def test_uvloop_is_the_default_where_installed(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    require(HAVE_UVLOOP, "uvloop is not installed (pip install 'kiwipy[uvloop]')")
    monkeypatch.delenv(LOOP_ENV, raising=False)
    _runs_on(uri, "uvloop")


def test_asyncio_loop_on_request(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    _runs_on(uri, "asyncio")


@pytest.mark.parametrize("value", ["trio", "uv loop", "1"])
def test_unknown_loop_is_refused(uri: str, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(LOOP_ENV, value)
    with pytest.raises(ValueError, match=LOOP_ENV):
        kiwipy.connect(uri)


def test_uvloop_asked_for_but_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # an import of it raises ImportError
    with pytest.raises(ValueError, match="uvloop is not installed"):
        new_loop()


def test_asyncio_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOOP_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)
    loop = new_loop()
    try:
        assert type(loop).__module__.startswith("asyncio")
        assert loop.run_until_complete(asyncio.sleep(0, result="ran")) == "ran"
    finally:
        loop.close()
