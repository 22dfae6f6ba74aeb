"""The worker processes of ``kiwipy demo`` (:class:`WorkerProcesses`): started with their
settings on stdin, waited for until ready, and ended by PID (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._common import CliError
from ._demo_worker import WORKERS

__all__ = ("START_TIMEOUT", "STOP_TIMEOUT", "WorkerProcesses")

#: Seconds the worker processes get to start, and then to stop before SIGKILL.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


@dataclass
class WorkerProcesses:
    """The demo's worker processes: ``python -m kiwipy.cli._demo_worker NAME``."""

    processes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    def start(self, url: str, encoder: str, options: dict[str, Any]) -> None:
        """Start one process per worker; its settings go through its stdin, not argv (which
        everyone on the host can read), and its stdin stays open as its lifeline."""
        import kiwipy

        env = dict(os.environ)
        here = str(Path(kiwipy.__file__).resolve().parents[1])  # the same kiwipy as ours
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        config = json.dumps({"url": url, "encoder": encoder, "options": options}) + "\n"
        for name in WORKERS:
            process = subprocess.Popen(
                [sys.executable, "-m", "kiwipy.cli._demo_worker", name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,  # Ctrl-C in a terminal reaches only the demo
            )
            self.processes[name] = process
            try:
                assert process.stdin is not None
                process.stdin.write(config)
                process.stdin.flush()
            except OSError:  # it died already: wait_ready() says so
                pass

    def wait_ready(self, timeout: float) -> dict[str, int]:
        """:returns: each worker's PID, once all are ready.

        :raises CliError: if one exits or is not ready within *timeout* seconds.
        """
        pids: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for name, process in self.processes.items():
                assert process.stdout is not None
                selector.register(process.stdout, selectors.EVENT_READ, name)
            while len(pids) < len(self.processes):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    late = ", ".join(n for n in self.processes if n not in pids)
                    raise CliError(f"the worker process(es) {late} did not start in {timeout:g} s")
                for key, _ in selector.select(remaining):
                    name = key.data
                    line = key.fileobj.readline()  # type: ignore[union-attr]
                    selector.unregister(key.fileobj)
                    if line.startswith("ready "):
                        pids[name] = int(line.split()[1])
                        continue
                    if line.startswith("error "):
                        why = line[len("error ") :].strip()
                    else:
                        why = f"it exited with code {self.processes[name].wait(STOP_TIMEOUT)}"
                    raise CliError(f"the worker process {name} did not start: {why}")
        return pids

    def stop(self) -> list[int]:
        """End every worker process: close its stdin, SIGTERM it by PID, SIGKILL it after
        :data:`STOP_TIMEOUT` seconds. :returns: the PIDs ended."""
        for process in self.processes.values():
            _close(process.stdin)
            if process.poll() is None:
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes.values():
            try:
                process.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _close(process.stdout)
        return [p.pid for p in self.processes.values()]


def _close(stream: Any) -> None:
    try:
        if stream is not None:
            stream.close()
    except OSError:  # a pipe to a process that is gone
        pass
