"""``kiwipy inspect`` without ``--queue`` and ``kiwipy dead list``, run as commands against
the real RabbitMQ.

Listing every queue needs the management HTTP API. The shared test broker may or may not
have the plugin, so the two cases are made explicit: a closed port stands for a broker
without it, and a small HTTP server on 127.0.0.1 answering as the API does for one with it
(the AMQP side is the real broker in both).
"""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kiwipy.cli._management import list_queues

from .test_cli_rmq import kiwipy, names, queue_of, reap

__all__ = ("names", "reap")  # fixtures shared with test_cli_rmq


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeManagement(http.server.BaseHTTPRequestHandler):
    """Answers ``GET /api/queues/<vhost>`` as the management plugin does."""

    seen: list[tuple[str, str]] = []
    queues: list[dict[str, Any]] = []

    def do_GET(self) -> None:
        FakeManagement.seen.append((self.path, self.headers.get("Authorization", "")))
        body = json.dumps(FakeManagement.queues).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def management() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeManagement)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_inspect_without_queue_says_when_queues_cannot_be_listed(names: list[str]) -> None:
    port = closed_port()
    common = [*names, "--management-url", f"http://127.0.0.1:{port}/"]
    text = kiwipy("inspect", *common)
    assert text.returncode == 0, text.stderr
    assert text.stderr.startswith(
        f"kiwipy inspect: note: the management API is not reachable at http://127.0.0.1:{port}/ ("
    )
    assert "the broker's management plugin is probably not enabled" in text.stderr
    assert "only the default task queue is shown (name others with --queue)" in text.stderr
    assert "queues: 2 listed (default queue only)" in text.stdout.splitlines()
    report = json.loads(kiwipy("inspect", "--json", *common).stdout)
    assert report["listing"]["source"] == "default queue only"
    assert [q["name"] for q in report["queues"]] == ["kiwipy.tasks", "kiwipy.tasks.dead"]


def test_inspect_without_queue_lists_every_queue_through_the_management_api(
    names: list[str], management: str
) -> None:
    FakeManagement.seen.clear()
    FakeManagement.queues = [
        {"name": "work", "messages_ready": 3, "messages_unacknowledged": 2, "consumers": 1},
        {"name": "alpha", "messages_ready": 0, "messages_unacknowledged": 0, "consumers": 0},
    ]
    text = kiwipy("inspect", *names, "--management-url", management)
    assert text.returncode == 0, text.stderr
    assert text.stderr == ""
    lines = text.stdout.splitlines()
    assert f"queues: 2 listed (management API at {management})" in lines
    assert lines[-3:] == [
        "queue    ready  unacked  consumers",
        "alpha        0        0          0",
        "work         3        2          1",
    ]
    path, authorization = FakeManagement.seen[-1]
    assert path.startswith("/api/queues/%2F?columns=")
    assert authorization == "Basic " + base64.b64encode(b"guest:guest").decode()  # from --url

    # A vhost and a password with escapes are sent unescaped where they belong.
    listed = list_queues("amqp://ops:s%40cret@127.0.0.1:5672/my%2Fvhost", management)
    assert [q["name"] for q in listed] == ["alpha", "work"]
    path, authorization = FakeManagement.seen[-1]
    assert path.startswith("/api/queues/my%2Fvhost?columns=")
    assert authorization == "Basic " + base64.b64encode(b"ops:s@cret").decode()


def test_dead_list_writes_its_table_to_stdout(names: list[str]) -> None:
    common = [*names, *queue_of(names)]
    assert kiwipy("send", '{"x": 1}', *common).returncode == 0
    parked = kiwipy("dead", "park", "--all", *queue_of(names), "--url", names[1])
    assert parked.returncode == 0, parked.stderr
    listed = kiwipy("dead", "list", *queue_of(names), "--url", names[1])
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr == ""
    queue = queue_of(names)[1]
    lines = listed.stdout.splitlines()
    assert lines[0] == f"{queue}.dead: 1 dead-lettered task(s)"
    assert lines[1].split() == ["#", "reason", "dead", "for", "correlation", "id", "body"]
    assert "parked-by-operator" in lines[2] and '{"x": 1}' in lines[2]
