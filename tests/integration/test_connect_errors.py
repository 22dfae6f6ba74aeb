"""A connection that cannot be opened raises a :class:`kiwipy.ConnectFailed` saying why, from
``kiwipy.connect``, :func:`kiwipy.rmq.async_connect` and the command line alike, with the
password masked and no stray log line on stderr (issue 19, item 4).

The broker cases (unknown virtual host, wrong password) use the shared local broker; the
others a port with nothing listening and a tiny local TCP server that answers garbage.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

import kiwipy
from kiwipy import rmq
from kiwipy.rmq.connection import _access

pytestmark = pytest.mark.integration

SECRET = "s3cret-Pw"


def with_auth(uri: str, password: str, path: str = "/") -> str:
    parts = urlsplit(uri)
    netloc = f"{parts.username or 'guest'}:{password}@{parts.hostname}:{parts.port or 5672}"
    return urlunsplit(parts._replace(netloc=netloc, path=path))


@pytest.fixture
def closed_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def garbage_port() -> Iterator[int]:
    """A local TCP server that answers every connection with a line of HTTP and hangs up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # the server socket was closed: the test is over
            with client:
                client.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone does not)
    server.close()
    thread.join(5)


def cases(rmq_uri: str, closed_port: int, garbage_port: int) -> dict[str, tuple[str, type, str]]:
    """name -> (URL with SECRET as password, expected class, expected words)."""
    no_vhost = "kiwipy-test-no-such-vhost"
    return {
        "vhost": (  # the right password, or the broker would not get as far as the vhost
            with_auth(rmq_uri, urlsplit(rmq_uri).password or "guest", f"/{no_vhost}"),
            kiwipy.AccessRefused,
            f"virtual host '{no_vhost}' not found",
        ),
        # LoginRefused: an AccessRefused that is also aiormq's error, as kiwipy 0.9 raised
        "password": (with_auth(rmq_uri, SECRET), _access.LoginRefused, "access refused for user"),
        "closed": (
            f"amqp://guest:{SECRET}@127.0.0.1:{closed_port}/",
            kiwipy.ConnectFailed,
            f"nothing listening on 127.0.0.1:{closed_port}",
        ),
        "garbage": (
            f"amqp://guest:{SECRET}@127.0.0.1:{garbage_port}/",
            kiwipy.ConnectFailed,
            f"127.0.0.1:{garbage_port} does not speak AMQP",
        ),
        "tls": (
            with_auth(rmq_uri, SECRET).replace("amqp://", "amqps://"),
            _access.TlsFailure,  # a TlsError, and aiormq's error as in kiwipy 0.9
            "does not speak TLS",
        ),
    }


CASES = ["vhost", "password", "closed", "garbage", "tls"]


def check(exc: BaseException, kind: type, words: str) -> None:
    assert type(exc) is kind, repr(exc)
    assert isinstance(exc, kiwipy.KiwiError) and isinstance(exc, ConnectionError)
    assert words in str(exc)
    assert SECRET not in str(exc) and SECRET not in exc.url  # type: ignore[attr-defined]
    assert str(exc).startswith("cannot connect to amqp")


@pytest.mark.parametrize("case", CASES)
def test_thread_connect(
    case: str, rmq_uri: str, closed_port: int, garbage_port: int, capfd: pytest.CaptureFixture[str]
) -> None:
    url, kind, words = cases(rmq_uri, closed_port, garbage_port)[case]
    with pytest.raises(kiwipy.ConnectFailed) as info:
        kiwipy.connect(url)
    check(info.value, kind, words)
    assert "error when creating transport" not in capfd.readouterr().err


@pytest.mark.parametrize("case", CASES)
async def test_async_connect(case: str, rmq_uri: str, closed_port: int, garbage_port: int) -> None:
    url, kind, words = cases(rmq_uri, closed_port, garbage_port)[case]
    with pytest.raises(kiwipy.ConnectFailed) as info:
        await rmq.async_connect(url)
    check(info.value, kind, words)


async def test_dict_params_are_described(rmq_uri: str) -> None:
    parts = urlsplit(rmq_uri)
    params = {"host": parts.hostname, "port": parts.port or 5672, "password": SECRET}
    with pytest.raises(kiwipy.AccessRefused) as info:
        await rmq.async_connect(params)
    assert SECRET not in str(info.value)
    assert "access refused for user 'guest'" in str(info.value)


@pytest.mark.parametrize("command", [["rpc", "x", "1"], ["inspect"]])
@pytest.mark.parametrize("case", ["vhost", "password", "closed", "garbage"])
def test_cli_says_why_in_one_line(
    command: list[str], case: str, rmq_uri: str, closed_port: int, garbage_port: int
) -> None:
    url, _kind, words = cases(rmq_uri, closed_port, garbage_port)[case]
    run = subprocess.run(
        [sys.executable, "-m", "kiwipy", *command, "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"kiwipy {command[0]}: error: cannot connect to amqp://")
    assert words in lines[0] and SECRET not in lines[0]


def test_no_stray_line_without_logging_config(closed_port: int) -> None:
    """A script that configured no logging shows only its own traceback."""
    script = textwrap.dedent(
        f"""
        import kiwipy
        try:
            kiwipy.connect("amqp://guest:guest@127.0.0.1:{closed_port}/")
        except kiwipy.ConnectFailed as exc:
            print(exc)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert f"nothing listening on 127.0.0.1:{closed_port}" in run.stdout
