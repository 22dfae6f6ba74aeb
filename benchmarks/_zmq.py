"""AiiDA's ZeroMQ broker (aiida-core 2.9, ``aiida.brokers.zeromq``) as a benchmark peer.

Runs only under the aiida-zmq interpreter (``scripts/aiida-zmq-venv``). Each measurement starts
its own broker service, ``python -m aiida.brokers.zeromq.service --service-dir DIR``, in a fresh
temporary directory (its task storage, PID/status files and, through ``TMPDIR``, its Unix
socket directory all live there), and stops it by PID at the end. Clients are
``ZeromqCommunicator`` objects (kiwipy's ``Communicator`` interface, thread-style: a private
event loop on a background thread) connected to the service's ``ipc://`` router socket.

Like ``_support``, this module imports only the standard library at module level.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class ZmqService:
    """One broker service process in its own temporary directory, ended by PID on ``stop``."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="kiwipy-bench-zmq-"))
        self.service_dir = self.tmp / "service"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.endpoint = ""
        # aiida creates its configuration folder on import: keep it inside the measurement's
        # directory (peers inherit this environment), never in the user's home.
        os.environ["AIIDA_PATH"] = str(self.tmp / "aiida")

    def start(self) -> str:
        """Start the service; return its router endpoint once it has bound the socket."""
        env = dict(os.environ, TMPDIR=str(self.tmp))  # its mkdtemp'd socket dir: ours
        cmd = [sys.executable, "-m", "aiida.brokers.zeromq.service"]
        cmd += ["--service-dir", str(self.service_dir)]
        with open(self.tmp / "service.stderr", "wb") as err:
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        status = self.service_dir / "broker.status"  # written after the router socket is bound
        sockets = self.service_dir / "broker.sockets"
        deadline = time.monotonic() + START_TIMEOUT
        while not (status.exists() and sockets.exists()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"ZeroMQ broker exited ({self.proc.returncode}): {self._tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ZeroMQ broker not ready within {START_TIMEOUT} s")
            time.sleep(0.02)
        self.endpoint = f"ipc://{sockets.read_text().strip()}/router.sock"
        return self.endpoint

    def _tail(self) -> str:
        try:
            return (self.tmp / "service.stderr").read_text()[-500:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM by PID (the service's own graceful stop), SIGKILL if it lingers; remove
        the directory."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> ZmqService:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop()


def connect(endpoint: str, prefetch: Optional[int] = None) -> Any:
    """A started ``ZeromqCommunicator``, created as ``ZeromqBroker.get_communicator`` does,
    without a task timeout; ``prefetch`` None = unlimited (kiwipy's default in these cases)."""
    from aiida.brokers.zeromq.communicator import ZeromqCommunicator

    comm = ZeromqCommunicator(router_endpoint=endpoint, task_prefetch_count=prefetch)
    comm.start()
    return comm


def await_rpc(comm: Any, recipient: str, timeout: float = 30.0) -> None:
    """Call ``recipient`` until it answers: its subscription travelled on another connection,
    so the broker may not know it yet when the peer says it is ready."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            comm.rpc_send(recipient, "ping").result(timeout)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def versions() -> Dict[str, str]:
    import zmq

    import aiida

    return {"aiida-core": aiida.__version__, "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()}
