"""A script that uses an asyncio communicator and closes it exits cleanly: no "Task was
destroyed but it is pending!", no "Exception ignored" and no traceback on stderr (issue 19,
item 3), whether it closes with ``await comm.close()`` (the thread communicators' name),
``await comm.disconnect()`` or ``async with``, and whether the loop is ``asyncio.run``'s or one
the script closes itself (plumpy's way), over ``memory://`` and ``amqp://``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from kiwipy import memory, rmq

    url, prefix, runner = sys.argv[1:4]

    async def open_one(n):
        if url.startswith("memory://"):
            return await memory.async_connect(f"memory://{prefix}-{n}")
        names = {f"{kind}": f"{prefix}-{n}.{kind}" for kind in ("message_exchange",
                 "task_exchange", "task_queue")}
        return await rmq.async_connect(url, testing_mode=True, **names)

    async def use(comm):
        heard = asyncio.Event()
        started = asyncio.Event()

        async def echo(_c, msg):
            return msg

        async def work(_c, task):
            if task == "slow":
                started.set()
                await asyncio.sleep(60)  # still running when the communicator closes
            return task * 2

        await comm.add_rpc_subscriber(echo, "echo")
        await comm.add_task_subscriber(work)
        await comm.add_broadcast_subscriber(lambda *_args: heard.set())
        assert await asyncio.wait_for(await comm.rpc_send("echo", 1), 5) == 1
        assert await asyncio.wait_for(await comm.task_send(21), 5) == 42
        await comm.broadcast_send("hi")
        await asyncio.wait_for(heard.wait(), 5)
        await comm.task_send("slow")
        await asyncio.wait_for(started.wait(), 5)

    async def main():
        comm = await open_one(1)
        await use(comm)
        await comm.close()
        comm = await open_one(2)
        await use(comm)
        await comm.disconnect()
        async with await open_one(3) as comm:
            await use(comm)
        print("done")

    if runner == "asyncio.run":
        asyncio.run(main())
    else:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
        loop.close()
    """
)


@pytest.fixture(params=["memory", "amqp"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    uri: str = request.getfixturevalue("rmq_uri")
    return uri


@pytest.mark.parametrize("runner", ["asyncio.run", "loop.close"])
def test_closing_leaves_no_pending_task(url: str, runner: str) -> None:
    prefix = f"kiwipy-test-exit-{uuid.uuid4().hex[:8]}"
    run = subprocess.run(
        [sys.executable, "-X", "dev", "-c", SCRIPT, url, prefix, runner],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and run.stdout.strip() == "done", run.stderr[-3000:]
    assert "Task was destroyed" not in run.stderr
    assert "Exception ignored" not in run.stderr and "Traceback" not in run.stderr, run.stderr
