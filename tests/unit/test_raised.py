"""Exceptions an asyncio future refuses or cannot deliver (``StopIteration``,
``GeneratorExit``) still reach it, wherever an outcome crosses a future (issue 11 item 2)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import pytest

import kiwipy
from kiwipy._dispatch import Dispatcher
from kiwipy._portal import to_asyncio
from kiwipy._raised import Carried, original

RAISED = [StopIteration, GeneratorExit, KeyboardInterrupt, SystemExit, StopAsyncIteration]


def _raise(error: type[BaseException]) -> Any:
    raise error("boom")


async def _failure(future: asyncio.Future[Any]) -> BaseException:
    """:returns: what awaiting *future* raises, as a task suspended on it sees it."""
    try:
        await asyncio.wait_for(asyncio.shield(future), 5.0)
    except BaseException as exc:
        return original(exc)
    pytest.fail("the future did not fail")


@pytest.mark.parametrize("error", RAISED, ids=lambda error: error.__name__)
async def test_dispatcher_delivers_what_a_call_raises(error: type[BaseException]) -> None:
    dispatcher = Dispatcher(asyncio.get_running_loop(), "test")
    try:
        failing = dispatcher.run(lambda: _raise(error))
        after = dispatcher.run(lambda: "next")
        assert isinstance(await _failure(failing), error)
        assert await asyncio.wait_for(after, 5.0) == "next"
    finally:
        dispatcher.close()


@pytest.mark.parametrize("error", RAISED, ids=lambda error: error.__name__)
async def test_to_asyncio_delivers_what_a_thread_future_holds(error: type[BaseException]) -> None:
    source: concurrent.futures.Future[Any] = concurrent.futures.Future()
    target = to_asyncio(source, asyncio.get_running_loop())
    source.set_exception(error("boom"))
    assert isinstance(await _failure(target), error)


@pytest.mark.parametrize("error", RAISED, ids=lambda error: error.__name__)
async def test_copy_future_copies_any_exception_to_an_asyncio_future(
    error: type[BaseException],
) -> None:
    source: kiwipy.Future[Any] = kiwipy.Future()
    target = asyncio.get_running_loop().create_future()
    kiwipy.chain(source, target)
    source.set_exception(error("boom"))
    assert isinstance(await _failure(target), error)


async def test_capture_exceptions_sets_stop_iteration_on_an_asyncio_future() -> None:
    target = asyncio.get_running_loop().create_future()
    with kiwipy.capture_exceptions(target):
        raise StopIteration("boom")
    exc = target.exception()
    assert isinstance(exc, RuntimeError)  # as Python 3.12's own set_exception does
    assert isinstance(exc, Carried) and isinstance(exc.__cause__, StopIteration)
