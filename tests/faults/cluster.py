"""A private 3-node RabbitMQ cluster, for failover tests (docs/cluster.md).

Follows section 1 of /work/shared/rabbitmq-testing.md: the nodes share one cookie and one
private epmd, find each other with ``classic_config`` peer discovery (3 retries of 200 ms),
and are started together. Like :class:`~tests.faults.broker.PrivateBroker`, everything is
private: a slot locked with ``flock`` (shared with the single-node brokers, so the two never
take the same slot) gives the epmd port; the nodes' AMQP, distribution and CLI ports come
from ranges no single node uses (5900+, 25900+, 36900+). Only processes started here are ever
signalled, by the beam pid each node writes.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from typing_extensions import Self

from .broker import (
    _claim_slot,
    _port_free,
    amqp_handshake,
    find_epmd,
    find_rmq_bin,
    signal_and_wait,
    start_epmd,
)
from .proxy import amqp_url

SIZE = 3
AMQP_BASE, DIST_BASE, CLI_DIST_BASE = 5900, 25900, 36900
CLI_PORTS_PER_NODE = 10


class ClusterNode:
    """One node of a :class:`PrivateCluster`."""

    def __init__(self, cluster: PrivateCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        slot = cluster.slot
        self.name = f"kwc{slot}n{index}"
        self.nodename = f"{self.name}@localhost"
        self.amqp_port = AMQP_BASE + SIZE * slot + index
        self.dist_port = DIST_BASE + SIZE * slot + index
        self.cli_min = CLI_DIST_BASE + CLI_PORTS_PER_NODE * (SIZE * slot + index)
        self.base = cluster.base / self.name
        self.base.mkdir()
        self._server: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return amqp_url(self.amqp_port)

    @property
    def pid(self) -> Optional[int]:
        try:
            return int((self.base / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        base = str(self.base)
        env.update(
            HOME=str(self.cluster.base / "home"),
            ERL_EPMD_PORT=str(self.cluster.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=f"{base}/mnesia",
            RABBITMQ_LOG_BASE=f"{base}/log",
            RABBITMQ_CONFIG_FILE=f"{self.cluster.base}/rabbitmq.conf",
            RABBITMQ_ADVANCED_CONFIG_FILE=f"{self.cluster.base}/advanced.config",
            RABBITMQ_ENABLED_PLUGINS_FILE=f"{self.cluster.base}/enabled_plugins",
            RABBITMQ_PID_FILE=f"{base}/pid",
            RABBITMQ_CONF_ENV_FILE=f"{self.cluster.base}/rabbitmq-env.conf",
            RABBITMQ_CTL_DIST_PORT_MIN=str(self.cli_min),
            RABBITMQ_CTL_DIST_PORT_MAX=str(self.cli_min + CLI_PORTS_PER_NODE - 1),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def launch(self) -> None:
        """Start the node without waiting (see :meth:`wait_ready`)."""
        if self.running:
            return
        (self.base / "pid").unlink(missing_ok=True)
        with open(self.base / "stdout.log", "ab") as out:
            self._server = subprocess.Popen(
                [str(self.cluster.rmq_bin / "rabbitmq-server")],
                env=self.env(), cwd=self.base, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def wait_ready(self, deadline: float) -> None:
        """Wait until the node serves AMQP (it opens its listener only once in the cluster)."""
        while not amqp_handshake(self.amqp_port):
            if self._server is None or self._server.poll() is not None:
                raise RuntimeError(f"{self.nodename} exited during start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.nodename} not ready in time:\n{self.log_tail()}")
            time.sleep(0.2)

    def start(self, timeout: float = 90.0) -> float:
        """(Re)start the node on its own data and wait until it serves AMQP.

        :returns: the seconds it took.
        """
        began = time.monotonic()
        self.launch()
        self.wait_ready(began + timeout)
        return time.monotonic() - began

    def kill(self) -> None:
        """Crash the node (SIGKILL to its beam pid) and wait until it is gone."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node gracefully (SIGTERM)."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        argv = [str(self.cluster.rmq_bin / "rabbitmqctl"), "-n", self.nodename, *args]
        done = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for path in (self.base / "stdout.log", self.base / "log" / f"{self.nodename}.log"):
            if path.exists():
                parts.append("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def _signal_and_wait(self, signum: signal.Signals, timeout: float) -> None:
        signal_and_wait(self._server, self.pid, signum, timeout)


class PrivateCluster:
    """Three private RabbitMQ nodes forming one cluster (module doc).

    :param consumer_timeout_ms: every node's ``consumer_timeout`` (``None``: RabbitMQ's).
    """

    def __init__(self, consumer_timeout_ms: Optional[int] = None) -> None:
        rmq_bin, epmd = find_rmq_bin(), find_epmd()
        if rmq_bin is None or epmd is None:
            raise RuntimeError("RabbitMQ (rabbitmq-server and epmd) is not installed")
        self.rmq_bin, self._epmd_exe = rmq_bin, epmd
        self.slot, self._lock = _claim_slot(None)
        self.epmd_port = 4400 + self.slot
        self.base = Path(tempfile.mkdtemp(prefix=f"kiwicluster{self.slot}-"))
        self._epmd: Optional[subprocess.Popen[bytes]] = None
        self.nodes = [ClusterNode(self, index) for index in range(SIZE)]
        busy = [p for n in self.nodes for p in (n.amqp_port, n.dist_port) if not _port_free(p)]
        if busy:
            self._lock.close()
            shutil.rmtree(self.base, ignore_errors=True)
            raise RuntimeError(f"ports of the private cluster are taken: {busy}")
        self.start_seconds: Optional[float] = None
        self._write_files(consumer_timeout_ms)
        atexit.register(self.close)

    def url(self, *indices: int) -> str:
        """A URL naming the given nodes (all by default) as comma-separated hosts."""
        chosen = [self.nodes[i] for i in (indices or range(SIZE))]
        hosts = ",".join(f"127.0.0.1:{node.amqp_port}" for node in chosen)
        return f"amqp://guest:guest@{hosts}/"

    def node_on(self, port: Optional[int]) -> ClusterNode:
        """The node listening on *port*."""
        return next(node for node in self.nodes if node.amqp_port == port)

    def start(self, timeout: float = 120.0) -> Self:
        """Start the three nodes together and wait until each serves AMQP."""
        began = time.monotonic()
        self._start_epmd()
        for node in self.nodes:
            node.launch()
        try:
            for node in self.nodes:
                node.wait_ready(began + timeout)
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def close(self) -> None:
        """Stop every node and our epmd, delete the files and free the slot. Idempotent."""
        if self._lock.closed:
            return
        atexit.unregister(self.close)
        try:
            for node in self.nodes:
                if node.running and node.pid is not None:
                    os.kill(node.pid, signal.SIGTERM)  # all three stop in parallel
            for node in self.nodes:
                node.stop()
        finally:
            if self._epmd is not None:
                self._epmd.kill()
                self._epmd.wait()
            shutil.rmtree(self.base, ignore_errors=True)
            self._lock.close()

    def _write_files(self, consumer_timeout: Optional[int]) -> None:
        (self.base / "home").mkdir()
        cookie = self.base / "home" / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        peers = "\n".join(
            f"cluster_formation.classic_config.nodes.{i + 1} = {node.nodename}"
            for i, node in enumerate(self.nodes)
        )
        (self.base / "rabbitmq.conf").write_text(
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"{peers}\n"
            "cluster_formation.discovery_retry_limit = 3\n"
            "cluster_formation.discovery_retry_interval = 200\n"
            "log.file.level = info\nlog.console = false\n"
        )
        rabbit = []
        if consumer_timeout is not None:
            rabbit += [f"{{consumer_timeout, {consumer_timeout}}}", "{channel_tick_interval, 1000}"]
        advanced = f"[{{rabbit, [{', '.join(rabbit)}]}}]." if rabbit else "[]."
        (self.base / "advanced.config").write_text(advanced + "\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")

    def _start_epmd(self) -> None:
        if self._epmd is None or self._epmd.poll() is not None:
            self._epmd = start_epmd(self._epmd_exe, self.epmd_port)
