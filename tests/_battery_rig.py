"""The pieces of the hostile battery (``tests/contract_battery.py``) that talk to the
communicators: bounded calls, outcomes of (nested) futures, and :class:`Rig`, the pair of
communicators a battery test uses across its examples."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import uuid
from collections.abc import AsyncIterator
from typing import Any

import kiwipy
from tests import contract  # partly initialised while it imports the battery: use at run time

__all__ = (
    "CALL_BOUND",
    "CONTROL_BOUND",
    "FUTURE_BOUND",
    "REFUSALS",
    "SEND_REFUSALS",
    "Outcome",
    "Rig",
    "call",
    "echo",
    "must",
    "outcome_of",
    "send_natively",
)

#: Seconds a call (a send, adding or removing a subscriber, ``task_queue``) may take.
CALL_BOUND = 5.0
#: Seconds each level of a returned future may take to resolve.
FUTURE_BOUND = 5.0
#: Seconds the control round (one task, one RPC) may take after an example.
CONTROL_BOUND = 3.0

#: What a call may raise to refuse a name or an identifier.
REFUSALS = (kiwipy.KiwiError, ValueError, TypeError)
#: What a send may raise to refuse a body.
SEND_REFUSALS = (kiwipy.KiwiError,)


# -- bounded calls and outcomes ----------------------------------------------------------------


async def call(what: str, awaitable: Any, refusals: tuple[type[BaseException], ...]) -> Any:
    """:returns: ``(True, result)``, or ``(False, error)`` if it raised one of *refusals*.
    Fails the example if it takes over :data:`CALL_BOUND` seconds or raises anything else."""
    try:
        return True, await asyncio.wait_for(awaitable, CALL_BOUND)
    except refusals as exc:
        return False, exc
    except TimeoutError as exc:  # asyncio's, or the thread facade's kiwipy.TimeoutError
        raise AssertionError(f"{what}: no answer within {CALL_BOUND} s ({exc!r})") from exc
    except BaseException as exc:
        allowed = ", ".join(refusal.__name__ for refusal in refusals)
        why = f", not a refusal ({allowed})" if refusals else ""
        raise AssertionError(f"{what} raised {exc!r}{why}") from exc


async def must(what: str, awaitable: Any) -> Any:
    """:returns: what *awaitable* gives; fails the example if it raises or takes too long."""
    ok, got = await call(what, awaitable, ())
    assert ok
    return got


class Outcome:
    """How a (nested) future ended: ``kind`` is ``'result'``, ``'error'`` or ``'cancelled'``."""

    def __init__(self, kind: str, value: Any = None) -> None:
        self.kind = kind
        self.value = value

    def __repr__(self) -> str:
        return f"Outcome({self.kind}, {self.value!r})"[:300]


async def outcome_of(what: str, future: Any) -> Outcome:
    """Follow *future* level by level (a future resolving to a future) to its end; fails the
    example if a level does not resolve within :data:`FUTURE_BOUND` seconds."""
    level = 1
    while True:
        done, _ = await asyncio.wait({future}, timeout=FUTURE_BOUND)
        assert done, f"{what}: level {level} of the future not resolved in {FUTURE_BOUND} s"
        if future.cancelled():
            return Outcome("cancelled")
        if future.exception() is not None:
            return Outcome("error", future.exception())
        if not asyncio.isfuture(future.result()):
            return Outcome("result", future.result())
        future, level = future.result(), level + 1


async def send_natively(view: Any, name: str, *args: Any) -> Any:
    """``view.native.<name>(*args)``, bounded: the communicator's own future (a
    ``concurrent.futures.Future`` for a blocking communicator), which the sender may cancel."""
    method = getattr(view.native, name)
    if inspect.iscoroutinefunction(method):
        return await must(name, method(*args))
    return await must(name, asyncio.to_thread(method, *args))


def echo(_comm: Any, msg: Any) -> Any:
    return msg


def _control_task(_comm: Any, task: Any) -> Any:
    # Also answers what earlier examples left in the queue; only the token matters.
    return f"control {task}" if isinstance(task, str) else None


# -- the communicator pair ----------------------------------------------------------------------


class Rig:
    """The communicators one battery test uses across its examples: a sender and a worker
    (the same communicator where the transport shares nothing between communicators)."""

    def __init__(self, transport: contract.ContractTransport, capabilities: frozenset[str]):
        self.transport = transport
        self.capabilities = capabilities
        self.sender: Any = None
        self.worker: Any = None
        self.control_rpc = ""
        self.broken = True
        self._serial = 0

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def unique(self, what: str) -> str:
        """:returns: a task queue name or RPC identifier no other example of the test uses."""
        self._serial += 1
        return self.transport.name(f"battery-{what}{self._serial}")

    @property
    def subscribers_on_sender_loop(self) -> bool:
        """Whether subscribers run on the test's loop (an asyncio communicator)."""
        return inspect.iscoroutinefunction(self.worker.native.rpc_send)

    async def ensure_connected(self) -> None:
        """Make a working pair if there is none (the last example broke it)."""
        if self.broken:
            await self._replace()
            self.broken = False

    @contextlib.asynccontextmanager
    async def example(self) -> AsyncIterator[Rig]:
        """One example: a working pair before it, and the control round after it."""
        await self.ensure_connected()
        self.broken = True  # until the control round says otherwise
        try:
            yield self
            try:
                await asyncio.wait_for(self.control_round(), CONTROL_BOUND)
            except TimeoutError:
                raise AssertionError(f"the control round took over {CONTROL_BOUND} s") from None
        except BaseException:
            # What the failure left (tasks and futures holding exceptions) is collected now,
            # not while pytest reports the failure (see BatteryContract.battery_garbage).
            gc.collect()
            raise
        self.broken = False

    async def control_round(self) -> None:
        """One task and one RPC, answered."""
        token = uuid.uuid4().hex
        ident = await must(
            "control add_task_subscriber", self.worker.add_task_subscriber(_control_task)
        )
        task = await must("control task_send", self.sender.task_send(token))
        assert await contract.settle(task, CONTROL_BOUND) == f"control {token}"
        await must("control remove_task_subscriber", self.worker.remove_task_subscriber(ident))
        answer = await must("control rpc_send", self.sender.rpc_send(self.control_rpc, token))
        assert await contract.settle(answer, CONTROL_BOUND) == token

    async def _replace(self) -> None:
        for old in {id(v): v for v in (self.sender, self.worker) if v is not None}.values():
            with contextlib.suppress(BaseException):  # it failed an example: close what can be
                await asyncio.wait_for(old.close(), CALL_BOUND)
        self.worker = await asyncio.wait_for(self.transport.connect(), CALL_BOUND)
        self.sender = self.worker
        if self.has(contract.SHARED):
            self.sender = await asyncio.wait_for(self.transport.connect(), CALL_BOUND)
        self.control_rpc = await must(
            "add the control RPC subscriber",
            self.worker.add_rpc_subscriber(echo, self.unique("control")),
        )
