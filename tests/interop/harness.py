"""Drive kiwipy 0.9 peers (``peer09.py``) from our tests.

Each ``Peer09`` is a subprocess running the python of the kiwipy-0.9 venv. Its stdout is one
JSON event per line (see ``peer09.py``); a reader thread collects them so that tests can wait for
events with a timeout instead of blocking on a pipe. Lines that are not JSON are kept as
``{"event": "raw", "line": ...}``, and the last lines of stderr go into every timeout message.
"""

from __future__ import annotations

import collections
import functools
import json
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Optional, Sequence

import aio_pika
from typing_extensions import Self

Event = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
PEER_SCRIPT = Path(__file__).with_name("peer09.py")


@functools.cache
def connect_ours(url: str, prefix: str, **options: Any) -> Any:
    """This library's thread communicator on the exchanges and task queue named after
    *prefix*, as a kiwipy 0.9 peer started with the same prefix uses them."""
    from kiwipy import rmq

    return rmq.RmqThreadCommunicator.connect(
        connection_params={"url": url},
        message_exchange=f"{prefix}.messages",
        task_exchange=f"{prefix}.tasks",
        task_queue=f"{prefix}.tasks",
        **options,
    )


def kiwipy09_python() -> str:
    """The kiwipy-0.9 venv's python; the first call may create the venv (needs PyPI)."""
    script = REPO / "scripts" / "kiwipy09-venv"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=900, check=True)
    return done.stdout.strip().splitlines()[-1]


async def delete_peer09_declarations(url: str, prefix: str, queue: Optional[str] = None) -> None:
    """Delete the durable task queue and the exchanges that 0.9 peers declare for ``prefix``.

    0.9 outside testing mode declares them durable and never deletes them.
    """
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.queue_delete(queue or f"{prefix}.tasks")
        for exchange in (f"{prefix}.messages", f"{prefix}.tasks"):
            await channel.exchange_delete(exchange)


class Peer09:
    """A running ``peer09.py ROLE ...``; see that script for roles and events.

    :param role: worker, rpc-server, listener, send-tasks, rpc-client or broadcaster.
    :param bodies: message bodies for client roles (JSON-serialisable), instead of ``count``.
    :param python: the interpreter; defaults to the kiwipy-0.9 venv's.
    :param testing_mode: run the peer with kiwipy 0.9's ``testing_mode=True``.
    """

    def __init__(
        self,
        role: str,
        *,
        url: str,
        exchange_prefix: str,
        queue: Optional[str] = None,
        identifier: Optional[str] = None,
        count: Optional[int] = None,
        bodies: Optional[Sequence[Any]] = None,
        encoder: str = "yaml",
        python: Optional[str] = None,
        testing_mode: bool = False,
    ) -> None:
        argv = [python or kiwipy09_python(), str(PEER_SCRIPT), role, "--url", url]
        argv += ["--exchange-prefix", exchange_prefix, "--encoder", encoder]
        argv += ["--testing-mode"] if testing_mode else []
        options = {"--queue": queue, "--identifier": identifier, "--count": count}
        options["--bodies"] = None if bodies is None else json.dumps(list(bodies))
        argv += [
            str(part) for opt, val in options.items() if val is not None for part in (opt, val)
        ]
        self.role = role
        self._events: list[Event] = []
        self._taken: collections.Counter[str] = collections.Counter()
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._eof = False
        self._changed = threading.Condition()
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_events, args=(self._proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self._proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def returncode(self) -> Optional[int]:
        return self._proc.poll()

    def events(self, kind: Optional[str] = None) -> list[Event]:
        """Every event received so far, or those of one ``kind``."""
        with self._changed:
            return [e for e in self._events if kind is None or e.get("event") == kind]

    def wait_for(self, event: str, timeout: float = 10.0) -> Event:
        """The next event of this kind not yet returned by ``wait_for``/``wait_for_count``."""
        return self.wait_for_count(event, 1, timeout)[0]

    def wait_for_count(self, event: str, count: int, timeout: float = 10.0) -> list[Event]:
        """The next ``count`` events of this kind, waiting up to ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                fresh = self._fresh(event)
                if len(fresh) >= count:
                    self._taken[event] += count
                    return fresh[:count]
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    raise TimeoutError(self._describe(f"{count} x {event!r}", len(fresh)))
                self._changed.wait(remaining)

    def stop(self, timeout: float = 10.0) -> int:
        """Close stdin (servers then close and exit), escalating to SIGTERM and SIGKILL."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass  # it already exited
        for escalate in (self._proc.terminate, self._proc.kill):
            try:
                self._proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                escalate()
        code = self._proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()
        return code

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def _fresh(self, event: str) -> list[Event]:
        matching = [e for e in self._events if e.get("event") == event]
        return matching[self._taken[event] :]

    def _describe(self, wanted: str, got: int) -> str:
        state = "exited" if self._eof else "running"
        stderr = "\n".join(self._stderr)
        return (
            f"peer09 {self.role} ({state}, rc={self._proc.poll()}): wanted {wanted}, got {got}.\n"
            f"events: {self._events}\nstderr:\n{stderr}"
        )

    def _read_events(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "raw", "line": line.rstrip("\n")}
            with self._changed:
                self._events.append(event)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr.append(line.rstrip("\n"))
