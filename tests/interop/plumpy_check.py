"""Run by the plumpy venv's python (scripts/plumpy-venv): drive plumpy 0.26's own kiwipy client
code (LoopCommunicator, ProcessLauncher, RemoteProcessController,
RemoteProcessThreadController, BroadcastFilter) against this library over RabbitMQ
(``amqp://``) or a SQLite file (``sqlite://``) and print one JSON line per step, with the
seconds the step took. Not imported by the test suite.

``plumpy_check.py URL PREFIX`` runs every step in one process. Over two processes:
``plumpy_check.py URL PREFIX worker`` runs plumpy's ProcessLauncher and the processes it
launches until a ``test.stop`` broadcast; ``plumpy_check.py URL PREFIX controller`` launches
processes there over tasks, pauses, plays and kills one over RPC and by broadcast, and
exchanges broadcasts with the worker.
"""

from __future__ import annotations

import asyncio
import functools
import json
import queue
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any, Optional

import plumpy
import yaml
from plumpy import communications, process_comms

import kiwipy
from kiwipy import rmq

TIMEOUT = 10.0
_clock = [time.perf_counter()]
#: The worker's communicator, given to the processes its launcher makes (see :class:`Remote`).
WORKER_COMMUNICATOR: Optional[Any] = None


class Quick(plumpy.Process):
    def run(self) -> None:
        pass


class Waits(plumpy.Process):
    def run(self) -> Any:
        return plumpy.Wait(self.next_step)

    def next_step(self) -> None:
        pass


class Remote(Waits):
    """Waits, launched by a task in the worker, listening there to RPCs and broadcasts (as an
    AiiDA daemon's processes do: the launcher's process gets the daemon's communicator)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("communicator", WORKER_COMMUNICATOR)
        super().__init__(*args, **kwargs)


def report(step: str, **fields: Any) -> None:
    now = time.perf_counter()
    seconds = round(now - _clock[0], 4)
    _clock[0] = now
    print(json.dumps({"step": step, **fields, "seconds": seconds}), flush=True)


def open_communicator(url: str, prefix: str) -> Any:
    """:returns: a thread communicator on *url*, with the options plumpy's tests use."""
    options: dict[str, Any] = {
        "message_exchange": f"{prefix}.messages",
        "task_exchange": f"{prefix}.tasks",
        "task_queue": f"{prefix}.tasks",
        "encoder": functools.partial(yaml.dump, encoding="utf-8"),
        "decoder": functools.partial(yaml.load, Loader=yaml.FullLoader),
        "testing_mode": True,
    }
    if url.startswith("sqlite://"):
        communicator = kiwipy.connect(url, **options)
    else:
        communicator = rmq.RmqThreadCommunicator.connect(connection_params={"url": url}, **options)
    communicator._loop.set_debug(True)  # plumpy's tests touch this private attribute
    return communicator


async def answering(controller: Any, pid: Any, timeout: float = TIMEOUT) -> Any:
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
    """Every step in this process."""
    thread_comm = open_communicator(url, prefix)
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


# Two processes


async def worker(url: str, prefix: str) -> None:
    """Launch the controller's processes until it broadcasts ``test.stop``; answer its
    ``test.hello`` broadcast with an ``echo.hello`` one."""
    global WORKER_COMMUNICATOR
    thread_comm = open_communicator(url, prefix)
    loop = asyncio.get_running_loop()
    comm = communications.LoopCommunicator(thread_comm, loop=loop)
    WORKER_COMMUNICATOR = comm
    tmp = tempfile.mkdtemp()
    stop: asyncio.Future[Any] = loop.create_future()
    # plumpy's convert_to_comm (plumpy/communications.py) schedules a subscriber on this loop
    # with run_coroutine_threadsafe, then, from the communicator's thread, adds a done
    # callback to the result: when the coroutine finished in between, asyncio queues that
    # callback with a call_soon that does not wake this loop, and the reply waits for the
    # loop's next event. A busy daemon has events all the time; an idle test loop has none,
    # so it gets a tick (the race is plumpy's, on any transport; see the closing note).
    ticking = asyncio.ensure_future(_tick())

    def listen(_c: Any, body: Any, sender: Any, subject: Any, _cid: Any) -> None:
        if subject == "test.stop":
            loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(sender))
        else:
            report("heard", received=[body, subject, sender])
            comm.broadcast_send({"echo": body}, sender=f"{prefix}.worker", subject="echo.hello")

    try:
        comm.add_task_subscriber(
            plumpy.ProcessLauncher(loop, persister=plumpy.PicklePersister(tmp))
        )
        comm.add_broadcast_subscriber(kiwipy.BroadcastFilter(listen, subject="test.*"))
        comm.add_rpc_subscriber(lambda _c, _msg: "ready", identifier=f"{prefix}.worker")
        report("ready")
        report("stopped", by=await stop)
    finally:
        ticking.cancel()
        thread_comm.close()
        shutil.rmtree(tmp)
    report("closed", is_closed=thread_comm.is_closed())


async def _tick() -> None:
    while True:  # noqa: ASYNC110 - a tick, not a wait for an event
        await asyncio.sleep(0.02)


def result(future: Any) -> Any:
    """:returns: the final value of a kiwipy future, unwrapped as plumpy's users do."""
    return plumpy.futures.unwrap_kiwi_future(future).result(timeout=TIMEOUT)


def until(ask: Callable[[], Any], done: Callable[[Any], bool]) -> Any:
    """:returns: ``ask()`` once *done* with it, asked again (within ``TIMEOUT``) until then;
    ``ask`` raising :class:`kiwipy.UnroutableError` counts as not done."""
    deadline = time.monotonic() + TIMEOUT
    value = None
    while True:
        try:
            value = ask()
            if done(value):
                return value
        except kiwipy.UnroutableError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {value!r}")
        time.sleep(0.02)


def controller(url: str, prefix: str) -> None:
    """Drive the worker with :class:`plumpy.RemoteProcessThreadController` (what ``verdi
    process pause`` uses), from this process's thread."""
    thread_comm = open_communicator(url, prefix)
    states: queue.Queue[Any] = queue.Queue()
    echoes: queue.Queue[Any] = queue.Queue()

    def listener(into: queue.Queue[Any]) -> Callable[..., None]:
        def listen(_c: Any, body: Any, sender: Any, subject: Any, _cid: Any) -> None:
            into.put([body, subject, str(sender)])

        return listen

    try:
        until(lambda: result(thread_comm.rpc_send(f"{prefix}.worker", None)), bool)
        report("worker_ready")
        remote = process_comms.RemoteProcessThreadController(thread_comm)
        report("launch", result=result(remote.launch_process(Quick)))
        futures = [remote.launch_process(Quick, nowait=True) for _ in range(10)]
        report("launch_nowait", pids=sum(isinstance(result(f), uuid.UUID) for f in futures))
        # (not execute_process: plumpy's thread controller sends its second task from a
        # done callback, on the communicator's loop thread, where a blocking call cannot be
        # made; on either transport)
        pid = result(remote.launch_process(Remote, nowait=True))
        thread_comm.add_broadcast_subscriber(
            kiwipy.BroadcastFilter(listener(states), subject="state_changed.*", sender=pid)
        )
        status = until(lambda: result(remote.get_status(pid)), bool)
        report("remote", state=status["state"], paused=status["paused"])
        paused = result(remote.pause_process(pid))
        report("pause", result=paused, paused=result(remote.get_status(pid))["paused"])
        played = result(remote.play_process(pid))
        report("play", result=played, paused=result(remote.get_status(pid))["paused"])
        remote.pause_all("all of them")  # a broadcast, heard by the process in the worker
        until(lambda: result(remote.get_status(pid))["paused"], bool)
        report("pause_all", paused=True)
        remote.play_all()
        until(lambda: result(remote.get_status(pid))["paused"], lambda p: not p)
        report("play_all", paused=False)
        killed = result(remote.kill_process(pid))
        # the process's own state-change broadcasts (earlier ones may have come already)
        last = until(lambda: states.get(timeout=TIMEOUT), lambda s: s[1].endswith(".killed"))
        report("kill", result=killed, broadcast=last[1], from_process=last[2] == str(pid))
        gone = until(lambda: _unroutable(remote, pid), bool)
        report("kill_unsubscribed", unroutable=gone)

        thread_comm.add_broadcast_subscriber(
            kiwipy.BroadcastFilter(listener(echoes), subject="echo.*")
        )
        thread_comm.broadcast_send({"x": 1}, subject="other")
        thread_comm.broadcast_send({"x": 2}, sender=f"{prefix}.controller", subject="test.hello")
        report("broadcast", received=echoes.get(timeout=TIMEOUT))
        thread_comm.broadcast_send(None, sender=f"{prefix}.controller", subject="test.stop")
    finally:
        thread_comm.close()
    report("closed", is_closed=thread_comm.is_closed())


def _unroutable(remote: Any, pid: Any) -> bool:
    """:returns: whether the RPC subscriber of the terminated process *pid* is gone."""
    try:
        result(remote.get_status(pid))
    except kiwipy.UnroutableError:
        return True
    return False


if __name__ == "__main__":
    role = sys.argv[3] if len(sys.argv) > 3 else "all"
    if role == "worker":
        asyncio.run(worker(sys.argv[1], sys.argv[2]))
    elif role == "controller":
        controller(sys.argv[1], sys.argv[2])
    else:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
