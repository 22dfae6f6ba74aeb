"""Run by the plumpy venv's python (scripts/plumpy-venv): drive plumpy 0.26's own kiwipy client
code (LoopCommunicator, ProcessLauncher, RemoteProcessController, BroadcastFilter) against this
library over RabbitMQ and print one JSON line per step. Not imported by the test suite."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import sys
import tempfile
import uuid
from typing import Any

import plumpy
import yaml
from plumpy import communications, process_comms

import kiwipy
from kiwipy import rmq


class Quick(plumpy.Process):
    def run(self) -> None:
        pass


class Waits(plumpy.Process):
    def run(self) -> Any:
        return plumpy.Wait(self.next_step)

    def next_step(self) -> None:
        pass


def report(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


async def answering(controller: Any, pid: Any, timeout: float = 10.0) -> Any:
    """:returns: the status of the process *pid*, asked until its RPC subscriber answers
    (instead of a fixed pause for it to be registered)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await controller.get_status(pid)
        except kiwipy.UnroutableError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def control(controller: Any, comm: Any) -> None:
    proc = Waits(communicator=comm)
    await answering(controller, proc.pid)
    await controller.pause_process(proc.pid)
    report("pause", paused=proc.paused)
    await controller.play_process(proc.pid)
    report("play", paused=proc.paused)
    await controller.kill_process(proc.pid)
    report("kill", state=str(proc.state))


async def main(url: str, prefix: str) -> None:
    thread_comm = rmq.RmqThreadCommunicator.connect(
        connection_params={"url": url},
        message_exchange=f"{prefix}.messages",
        task_exchange=f"{prefix}.tasks",
        task_queue=f"{prefix}.tasks",
        encoder=functools.partial(yaml.dump, encoding="utf-8"),
        decoder=functools.partial(yaml.load, Loader=yaml.FullLoader),
        testing_mode=True,
    )
    thread_comm._loop.set_debug(True)  # plumpy's tests touch this private attribute
    loop = asyncio.get_running_loop()
    comm = communications.LoopCommunicator(thread_comm, loop=loop)
    tmp = tempfile.mkdtemp()
    try:
        comm.add_task_subscriber(
            plumpy.ProcessLauncher(loop, persister=plumpy.PicklePersister(tmp))
        )
        controller = process_comms.RemoteProcessController(comm)
        report("launch", result=await controller.launch_process(Quick))
        pids = await asyncio.gather(
            *[controller.launch_process(Quick, nowait=True) for _ in range(10)]
        )
        report("launch_nowait", pids=sum(isinstance(pid, uuid.UUID) for pid in pids))
        report("execute", result=await controller.execute_process(Quick))
        await control(controller, comm)
        got: asyncio.Future[Any] = loop.create_future()

        def listen(_c: Any, body: Any, _sender: Any, subject: Any, _cid: Any) -> None:
            loop.call_soon_threadsafe(lambda: got.done() or got.set_result([body, subject]))

        comm.add_broadcast_subscriber(kiwipy.BroadcastFilter(listen, subject="test.*"))
        comm.broadcast_send({"x": 1}, subject="other")
        comm.broadcast_send({"x": 2}, subject="test.hello")
        report("broadcast", received=await asyncio.wait_for(got, 5))
    finally:
        thread_comm.close()
        shutil.rmtree(tmp)
    report("closed", is_closed=thread_comm.is_closed())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
