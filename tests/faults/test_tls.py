"""TLS against a private node with a CA made by the test: certificates are verified by
default (an untrusted one fails at once with :class:`~kiwipy.TlsError`), host names are
checked, a client certificate logs in with EXTERNAL, and the command line takes the same
``amqps://`` URL parameters (``cafile``, ``certfile``, ``keyfile``, ``auth=external``).

One TLS node serves the whole module (starting one takes about 10 s)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

import kiwipy
from kiwipy import rmq

from .._ci import require
from ._scenario import Names
from .broker import PrivateBroker, find_epmd, find_rmq_bin
from .tls import CLIENT_USER, Certificates, find_openssl, make_certificates

WAIT = 10.0
#: An untrusted certificate must fail within this, not after reconnection attempts.
FAST = 2.0


class TlsNode(NamedTuple):
    broker: PrivateBroker
    certs: Certificates

    def url(self, host: str = "localhost", *, user: str = "guest:guest@", **query: Any) -> str:
        params = "&".join(f"{key}={value}" for key, value in query.items())
        return f"amqps://{user}{host}:{self.broker.tls_port}/" + (f"?{params}" if params else "")

    def external(self) -> str:
        """The URL that logs in with the client certificate alone."""
        c = self.certs
        return self.url(user="", cafile=c.ca, certfile=c.client_cert, keyfile=c.client_key,
                        auth="external")  # fmt: skip


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsNode]:
    installed = find_rmq_bin() is not None and find_epmd() is not None
    require(installed, "RabbitMQ is not installed (rabbitmq-server and epmd not found)")
    require(find_openssl() is not None, "the openssl command is not installed")
    certs = make_certificates(tmp_path_factory.mktemp("tls"))
    with PrivateBroker(tls=certs) as broker:
        broker.rabbitmqctl("add_user", CLIENT_USER, "unused")
        broker.rabbitmqctl("clear_password", CLIENT_USER)  # certificate only
        broker.rabbitmqctl("set_permissions", "-p", "/", CLIENT_USER, ".*", ".*", ".*")
        yield TlsNode(broker, certs)


async def _echo_roundtrip(url: str) -> Any:
    names = Names()
    comm = await rmq.async_connect(url, **names.options())
    try:
        await comm.add_rpc_subscriber(lambda _c, msg: msg, "echo")
        await comm.add_task_subscriber(lambda _c, task: task * 2)
        echoed = await asyncio.wait_for(await comm.rpc_send("echo", "over tls"), WAIT)
        doubled = await asyncio.wait_for(await comm.task_send(21), WAIT)
        return echoed, doubled
    finally:
        await comm.disconnect()


async def test_verified_with_the_ca_from_the_url(tls_node: TlsNode) -> None:
    url = tls_node.url(cafile=tls_node.certs.ca)
    assert await _echo_roundtrip(url) == ("over tls", 42)


async def test_an_untrusted_certificate_fails_at_once(tls_node: TlsNode) -> None:
    began = time.monotonic()
    with pytest.raises(kiwipy.TlsError) as raised:
        await rmq.async_connect(tls_node.url())  # the system's CAs only: not ours
    assert time.monotonic() - began < FAST
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
    assert "cafile=" in str(raised.value)  # says what to do
    assert isinstance(raised.value, ConnectionError)
    assert ":guest@" not in str(raised.value)  # the password (the user name may be shown)


def test_an_untrusted_certificate_fails_the_thread_communicator(tls_node: TlsNode) -> None:
    began = time.monotonic()
    with pytest.raises(kiwipy.TlsError):
        kiwipy.connect(tls_node.url())
    assert time.monotonic() - began < FAST


async def test_the_host_name_is_checked(tls_node: TlsNode) -> None:
    """The server certificate is for ``localhost`` only: ``127.0.0.1`` is refused."""
    with pytest.raises(kiwipy.TlsError) as raised:
        await rmq.async_connect(tls_node.url("127.0.0.1", cafile=tls_node.certs.ca))
    assert "not valid for '127.0.0.1'" in str(raised.value)
    assert "host name" in str(raised.value)


async def test_client_certificate_with_external(tls_node: TlsNode) -> None:
    assert await _echo_roundtrip(tls_node.external()) == ("over tls", 42)
    without_cert = tls_node.url(user="", cafile=tls_node.certs.ca, auth="external")
    with pytest.raises(kiwipy.AccessRefused) as raised:
        await rmq.async_connect(without_cert)
    assert "refused the login" in str(raised.value)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiwipy", *argv], capture_output=True, text=True, timeout=60
    )


def test_the_command_line_with_amqps_parameters(tls_node: TlsNode) -> None:
    names = Names()
    exchanges = ["--task-exchange", names.task_exchange, "--queue", names.task_queue]
    sent = _cli("send", "--url", tls_node.external(), *exchanges, "7")
    assert sent.returncode == 0, sent.stderr
    shown = _cli("inspect", "--url", tls_node.external(), "--json", *exchanges[2:])
    assert shown.returncode == 0, shown.stderr
    assert names.task_queue in shown.stdout
    untrusted = _cli("inspect", "--url", tls_node.url())
    assert untrusted.returncode != 0
    assert "TLS handshake" in untrusted.stderr and "cafile=" in untrusted.stderr
