"""Future helpers: ``chain``, ``copy_future`` and ``capture_exceptions``, on both kinds of
future."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import pytest

import kiwipy


def test_aliases() -> None:
    assert kiwipy.Future is concurrent.futures.Future
    assert kiwipy.CancelledError is concurrent.futures.CancelledError
    assert kiwipy.wait is concurrent.futures.wait
    assert kiwipy.as_completed is concurrent.futures.as_completed


@pytest.mark.parametrize(
    ("settle", "check"),
    [
        (lambda f: f.set_result(3), lambda f: f.result() == 3),
        (
            lambda f: f.set_exception(ValueError("x")),
            lambda f: isinstance(f.exception(), ValueError),
        ),
        (lambda f: f.cancel(), lambda f: f.cancelled()),
    ],
    ids=["result", "exception", "cancelled"],
)
def test_chain_copies_every_outcome(settle: Any, check: Any) -> None:
    source: kiwipy.Future[Any] = kiwipy.Future()
    target: kiwipy.Future[Any] = kiwipy.Future()
    kiwipy.chain(source, target)
    assert not target.done()
    settle(source)
    assert check(target)


def test_copy_future_leaves_a_done_target_alone() -> None:
    source: kiwipy.Future[Any] = kiwipy.Future()
    target: kiwipy.Future[Any] = kiwipy.Future()
    source.set_result("new")
    target.set_result("old")
    kiwipy.copy_future(source, target)
    assert target.result() == "old"


async def test_helpers_work_on_asyncio_futures() -> None:
    loop = asyncio.get_running_loop()
    source, target = loop.create_future(), loop.create_future()
    kiwipy.chain(source, target)
    source.set_result("async")
    assert await asyncio.wait_for(target, 1) == "async"
    captured = loop.create_future()
    with kiwipy.capture_exceptions(captured):
        raise RuntimeError("into the future")
    with pytest.raises(RuntimeError, match="into the future"):
        await captured


def test_capture_exceptions() -> None:
    future: kiwipy.Future[Any] = kiwipy.Future()
    with kiwipy.capture_exceptions(future):
        raise ValueError("captured")
    assert isinstance(future.exception(), ValueError)
    with kiwipy.capture_exceptions(future):  # already done: dropped, not raised
        raise ValueError("second")
    assert str(future.exception()) == "captured"


def test_capture_exceptions_ignore_and_base_exceptions() -> None:
    future: kiwipy.Future[Any] = kiwipy.Future()
    with pytest.raises(KeyError), kiwipy.capture_exceptions(future, ignore=(KeyError,)):
        raise KeyError("re-raised")
    with pytest.raises(KeyboardInterrupt), kiwipy.capture_exceptions(future):
        raise KeyboardInterrupt
    assert not future.done()
