"""One private RabbitMQ node per instance, for tests that stop, kill or reconfigure a broker.

Follows /work/shared/rabbitmq-testing.md. Invariants:

- Nothing is shared with the system node: own HOME and cookie, own epmd, own node name, ports,
  data, log and config files. The system-wide ``rabbitmq-env.conf`` and ``enabled_plugins`` are
  shadowed by private (empty) files.
- The real start script in ``$RMQ_BIN`` is run, not Debian's wrapper on PATH: as root the wrapper
  ``su``s to the ``rabbitmq`` user, which could not write our temp dir.
- Ports come from a numbered *slot* guarded by an ``flock``, so concurrent test sessions on one
  machine never pick the same ports or node name, and none of them collides with the system
  node (5672, 25672, 4369, 15672) or the cluster recipe's ranges (4380, 5701-5703, 25701-25703,
  35701-35730).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple, Optional, TypeVar

from pamqp import base, commands, frame, header
from typing_extensions import Self

from .proxy import amqp_url
from .tls import Certificates

SLOTS = range(100)
EPMD_BASE, AMQP_BASE, DIST_BASE, CLI_DIST_BASE = 4400, 5800, 25800, 35800
TLS_BASE = 6800
CLI_PORTS_PER_SLOT = 10
_LOCK_DIR = Path(tempfile.gettempdir()) / "kiwitest-slots"
_F = TypeVar("_F", bound=base.Frame)


class QueueInfo(NamedTuple):
    name: str
    messages: int
    consumers: int


def find_rmq_bin() -> Optional[Path]:
    """The package's own ``bin`` directory (``$RMQ_BIN``), or ``None`` if RabbitMQ is missing."""
    if os.environ.get("RMQ_BIN"):
        candidate = Path(os.environ["RMQ_BIN"])
    else:
        on_path = shutil.which("rabbitmq-server") or shutil.which(
            "rabbitmq-server", path="/usr/sbin"
        )
        if on_path is None:
            return None
        candidate = Path(on_path).resolve().parent
    return candidate if (candidate / "rabbitmq-server").is_file() else None


def find_epmd() -> Optional[str]:
    return shutil.which("epmd") or shutil.which("epmd", path="/usr/lib/erlang/bin")


def _port_free(port: int) -> bool:
    """True unless something listens on ``port``; TIME_WAIT leftovers don't count (RabbitMQ
    and epmd bind with SO_REUSEADDR too)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _claim_slot(amqp_port: Optional[int]) -> tuple[int, IO[bytes]]:
    """Lock the first slot whose ports are all free; the lock lives as long as the file."""
    _LOCK_DIR.mkdir(exist_ok=True)
    for slot in SLOTS:
        lock = open(_LOCK_DIR / f"{slot}.lock", "wb")  # held until close()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        ports = [EPMD_BASE + slot, DIST_BASE + slot, amqp_port or AMQP_BASE + slot]
        ports.append(TLS_BASE + slot)
        if all(_port_free(port) for port in ports):
            return slot, lock
        lock.close()
    raise RuntimeError("no free slot for a private RabbitMQ node")


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed during the AMQP handshake")
        data += chunk
    return data


def _expect(sock: socket.socket, kind: type[_F]) -> _F:
    head = _recv_exactly(sock, 7)
    (size,) = struct.unpack(">I", head[3:])
    _, _, value = frame.unmarshal(head + _recv_exactly(sock, size + 1))
    if not isinstance(value, kind):
        raise ConnectionError(f"expected {kind.__name__}, got {value!r}")
    return value


def amqp_handshake(port: int, *, vhost: str = "/", timeout: float = 2.0) -> bool:
    """Open and close a real AMQP connection as guest: true once the node can serve clients."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(frame.marshal(header.ProtocolHeader(), 0))
            _expect(sock, commands.Connection.Start)
            sock.sendall(frame.marshal(commands.Connection.StartOk(response="\0guest\0guest"), 0))
            tune = _expect(sock, commands.Connection.Tune)
            ok = commands.Connection.TuneOk(tune.channel_max, tune.frame_max, heartbeat=0)
            sock.sendall(frame.marshal(ok, 0))
            sock.sendall(frame.marshal(commands.Connection.Open(virtual_host=vhost), 0))
            _expect(sock, commands.Connection.OpenOk)
            close = commands.Connection.Close(200, "probe", 0, 0)
            sock.sendall(frame.marshal(close, 0))
            _expect(sock, commands.Connection.CloseOk)
    except (OSError, ValueError):
        return False  # pamqp raises ValueError subclasses on garbage; the node is not ready
    return True


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def start_epmd(exe: str, port: int) -> subprocess.Popen[bytes]:
    """:returns: our own epmd, run in the foreground on 127.0.0.1:*port* (we hold its pid and
    it dies with us), once it listens."""
    argv = [exe, "-port", str(port), "-address", "127.0.0.1"]
    epmd = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while _port_free(port):
        if epmd.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"epmd did not start on port {port}")
        time.sleep(0.05)
    return epmd


def signal_and_wait(
    server: Optional[subprocess.Popen[bytes]], pid: Optional[int], signum: signal.Signals,
    timeout: float,
) -> None:  # fmt: skip
    """Signal a node's beam.smp (*pid*) and reap its start script (*server*); escalate to
    SIGKILL after *timeout*."""
    if server is None or server.poll() is not None:
        return
    if pid is None:  # killed before rabbit wrote its pid file: the script is all we have
        os.killpg(server.pid, signal.SIGKILL)
    else:
        os.kill(pid, signum)
    try:
        server.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
    deadline = time.monotonic() + 10
    while pid is not None and not _process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


class PrivateBroker:
    """A private single RabbitMQ node on loopback.

    :param consumer_timeout_ms: ``consumer_timeout``; ``None`` keeps RabbitMQ's 30 min.
    :param channel_tick_interval_ms: how often channels check the consumer timeout; RabbitMQ's
        default is 60 s, so lower it together with ``consumer_timeout_ms``.
    :param amqp_port: the AMQP port; by default ``5800 + slot``.
    :param tls: certificates for a TLS listener on :attr:`tls_port` (``6800 + slot``) that
        asks for client certificates (and accepts connections without one) and offers
        EXTERNAL authentication by the certificate's common name.
    """

    def __init__(
        self,
        *,
        consumer_timeout_ms: Optional[int] = None,
        channel_tick_interval_ms: Optional[int] = None,
        amqp_port: Optional[int] = None,
        tls: Optional[Certificates] = None,
    ) -> None:
        rmq_bin, epmd = find_rmq_bin(), find_epmd()
        if rmq_bin is None or epmd is None:
            raise RuntimeError("RabbitMQ (rabbitmq-server and epmd) is not installed")
        self.rmq_bin, self._epmd_exe = rmq_bin, epmd
        self.slot, self._lock = _claim_slot(amqp_port)
        self.amqp_port = amqp_port or AMQP_BASE + self.slot
        self.tls_port = TLS_BASE + self.slot
        self.epmd_port = EPMD_BASE + self.slot
        self.nodename = f"kiwitest{self.slot}@localhost"
        self.base = Path(tempfile.mkdtemp(prefix=f"kiwitest{self.slot}-"))
        self.last_start_seconds: Optional[float] = None
        self._server: Optional[subprocess.Popen[bytes]] = None
        self._epmd: Optional[subprocess.Popen[bytes]] = None
        self._write_files(consumer_timeout_ms, channel_tick_interval_ms)
        if tls is not None:
            self._write_tls(tls)
        atexit.register(self.close)

    @property
    def url(self) -> str:
        return amqp_url(self.amqp_port)

    def url_for(self, vhost: str = "/", *, user: str = "guest", password: str = "guest") -> str:
        return amqp_url(self.amqp_port, vhost, user=user, password=password)

    @property
    def pid(self) -> Optional[int]:
        """The beam.smp OS pid of the running node, from RabbitMQ's pid file."""
        try:
            return int((self.base / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def env(self) -> dict[str, str]:
        """The environment for ``rabbitmq-server`` and the CLI tools of this node."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        cli_min = CLI_DIST_BASE + CLI_PORTS_PER_SLOT * self.slot
        base = str(self.base)
        env.update(
            HOME=f"{base}/home",
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(DIST_BASE + self.slot),
            RABBITMQ_MNESIA_BASE=f"{base}/mnesia",
            RABBITMQ_LOG_BASE=f"{base}/log",
            RABBITMQ_CONFIG_FILE=f"{base}/rabbitmq.conf",
            RABBITMQ_ADVANCED_CONFIG_FILE=f"{base}/advanced.config",
            RABBITMQ_ENABLED_PLUGINS_FILE=f"{base}/enabled_plugins",
            RABBITMQ_PID_FILE=f"{base}/pid",
            RABBITMQ_CONF_ENV_FILE=f"{base}/rabbitmq-env.conf",
            RABBITMQ_CTL_DIST_PORT_MIN=str(cli_min),
            RABBITMQ_CTL_DIST_PORT_MAX=str(cli_min + CLI_PORTS_PER_SLOT - 1),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def start(self, timeout: float = 60.0) -> Self:
        """Start the node and wait until it completes an AMQP handshake."""
        if self.running:
            return self
        self._start_epmd()
        (self.base / "pid").unlink(missing_ok=True)  # a stale pid must not be mistaken for ours
        began = time.monotonic()
        with open(self.base / "stdout.log", "ab") as out:
            self._server = subprocess.Popen(
                [str(self.rmq_bin / "rabbitmq-server")],
                env=self.env(),
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(began + timeout)
        self.last_start_seconds = time.monotonic() - began
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully (SIGTERM to beam.smp) and wait for the node to exit."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Crash the node (SIGKILL to beam.smp) and wait for it to be gone."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self, timeout: float = 60.0) -> Self:
        """Stop, then start on the same data dirs: durable queues and persistent messages stay."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the node and our epmd, delete the temp dir and free the slot. Idempotent."""
        if self._lock.closed:
            return
        atexit.unregister(self.close)
        try:
            self._signal_and_wait(signal.SIGTERM, 30.0)
        finally:
            if self._epmd is not None:
                self._epmd.kill()
                self._epmd.wait()
            shutil.rmtree(self.base, ignore_errors=True)
            self._lock.close()

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run the real ``rabbitmqctl -n <node> *args``; returns stdout, raises on failure."""
        argv = [str(self.rmq_bin / "rabbitmqctl"), "-n", self.nodename, *args]
        done = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def list_queues(self, vhost: str = "/") -> list[QueueInfo]:
        out = self.rabbitmqctl(
            "list_queues", "-p", vhost, "-q", "--formatter", "json", "name", "messages", "consumers"
        )
        return [QueueInfo(q["name"], q["messages"], q["consumers"]) for q in json.loads(out)]

    def log_tail(self, lines: int = 40) -> str:
        """The end of the node's log and of the start script's output, for failure messages."""
        parts = []
        for path in (self.base / "stdout.log", self.base / "log" / f"{self.nodename}.log"):
            if path.exists():
                parts.append("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def _write_files(self, consumer_timeout: Optional[int], tick: Optional[int]) -> None:
        (self.base / "home").mkdir()
        cookie = self.base / "home" / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (self.base / "rabbitmq.conf").write_text("log.file.level = info\nlog.console = false\n")
        rabbit = []
        if consumer_timeout is not None:
            rabbit.append(f"{{consumer_timeout, {consumer_timeout}}}")
        if tick is not None:
            rabbit.append(f"{{channel_tick_interval, {tick}}}")
        advanced = f"[{{rabbit, [{', '.join(rabbit)}]}}]." if rabbit else "[]."
        (self.base / "advanced.config").write_text(advanced + "\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")

    def _write_tls(self, tls: Certificates) -> None:
        lines = [
            f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
            f"ssl_options.cacertfile = {tls.ca}",
            f"ssl_options.certfile = {tls.server_cert}",
            f"ssl_options.keyfile = {tls.server_key}",
            "ssl_options.verify = verify_peer",
            "ssl_options.fail_if_no_peer_cert = false",
            "auth_mechanisms.1 = PLAIN",
            "auth_mechanisms.2 = AMQPLAIN",
            "auth_mechanisms.3 = EXTERNAL",
            "ssl_cert_login_from = common_name",
        ]
        with open(self.base / "rabbitmq.conf", "a") as conf:
            conf.write("\n".join(lines) + "\n")
        (self.base / "enabled_plugins").write_text("[rabbitmq_auth_mechanism_ssl].\n")

    def _start_epmd(self) -> None:
        """Run our own epmd in the foreground, so we hold its pid and it dies with us."""
        if self._epmd is None or self._epmd.poll() is not None:
            self._epmd = start_epmd(self._epmd_exe, self.epmd_port)

    def _wait_ready(self, deadline: float) -> None:
        assert self._server is not None
        while not amqp_handshake(self.amqp_port):
            if self._server.poll() is not None:
                raise RuntimeError(f"{self.nodename} exited during start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"{self.nodename} not ready in time:\n{self.log_tail()}")
            time.sleep(0.2)

    def _signal_and_wait(self, signum: signal.Signals, timeout: float) -> None:
        signal_and_wait(self._server, self.pid, signum, timeout)
