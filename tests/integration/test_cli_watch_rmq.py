"""``kiwipy inspect --watch`` run as a command against the real RabbitMQ (issue 17), over
plain AMQP (the shared broker's management plugin is not relied on)."""

from __future__ import annotations

import asyncio
import http.server
import json
import signal
import threading
from typing import Any

import pytest

from kiwipy import rmq

from .test_cli_rmq import Running, kiwipy, names, queue_of, reap

__all__ = ("names", "reap")  # fixtures shared with test_cli_rmq


async def _send(names: list[str], count: int) -> None:
    """Queue *count* tasks (confirmed) on the test's queue, as ``kiwipy send`` would."""
    options = dict(zip(names[::2], names[1::2]))
    queue = queue_of(names)[1]
    comm = await rmq.async_connect(
        options["--url"],
        message_exchange=options["--message-exchange"],
        task_exchange=options["--task-exchange"],
        task_queue=queue,
    )
    try:
        for number in range(count):
            await comm.task_send({"n": number}, no_reply=True)
    finally:
        await comm.disconnect()


def test_watch_json_lines_show_depth_consumers_and_rates(names: list[str]) -> None:
    asyncio.run(_send(names, 1))  # the queue exists from now on
    watch = Running(
        "inspect",
        "--watch",
        "--json",
        "--count",
        "2",
        "--interval",
        "2",
        *names,
        *queue_of(names),
    )
    watch.wait_for('"queues"')
    asyncio.run(_send(names, 5))  # between the two refreshes: 2 s is ample for 5 confirms
    assert watch.stop(signal.SIGCONT, timeout=30) == 0, watch.err  # it ends by itself
    first, second = (json.loads(line) for line in watch.out)
    queue = queue_of(names)[1]
    assert [q["name"] for q in second["queues"]] == [queue, f"{queue}.dead"]
    before, after = first["queues"][0], second["queues"][0]
    assert (before["messages"], after["messages"]) == (1, 6)
    assert after["consumers"] == 0 and after["dead_letter"] is False
    assert second["queues"][1]["dead_letter"] is True
    assert before["depth_rate"] is None  # no earlier sample
    assert 0 < after["depth_rate"] <= 5 / 1.5  # 5 more in about 2 s
    assert after["rate_in"] is None and after["rate_out"] is None  # AMQP cannot tell
    assert second["connections"] is None


def test_watch_count_and_interval_while_tasks_are_sent(names: list[str]) -> None:
    asyncio.run(_send(names, 1))
    sending = threading.Thread(target=asyncio.run, args=(_send(names, 50),))
    sending.start()
    done = kiwipy(
        "inspect",
        "--watch",
        "--count",
        "2",
        "--json",
        "--interval",
        "0.5",
        *names,
        *queue_of(names),
    )
    assert done.returncode == 0, done.stderr
    sending.join(30)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2
    assert lines[0]["queues"][0]["messages"] <= lines[1]["queues"][0]["messages"] <= 51
    assert isinstance(lines[1]["queues"][0]["depth_rate"], float)


def test_watch_ends_cleanly_on_ctrl_c(names: list[str]) -> None:
    asyncio.run(_send(names, 1))
    watch = Running("inspect", "--watch", "--interval", "0.5", *names, *queue_of(names))
    watch.wait_for("ready")  # the table's heading: one refresh shown
    assert watch.stop(signal.SIGINT) == 0, watch.err
    assert not any("Traceback" in line for line in watch.err), watch.err
    assert any(line.startswith(queue_of(names)[1]) for line in watch.out)


class _GrowingManagement(http.server.BaseHTTPRequestHandler):
    """The management API of a broker where 10 messages are published to ``work`` and 4
    delivered from it between two queue listings; 3 client connections."""

    listings = 0

    def do_GET(self) -> None:
        if self.path.startswith("/api/connections"):
            rows: list[dict[str, Any]] = [{"name": f"c{n}"} for n in range(3)]
        else:
            count = _GrowingManagement.listings
            _GrowingManagement.listings += 1
            stats = {"publish": 100 + 10 * count, "deliver_get": 50 + 4 * count}
            rows = [
                {
                    "name": "work",
                    "messages_ready": 6 * count,
                    "consumers": 2,
                    "messages_unacknowledged": 1,
                    "message_stats": stats,
                },
                {"name": "work.dead", "messages_ready": 1, "consumers": 0},
            ]
        body = json.dumps(rows).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_watch_with_the_management_api_gives_rates_in_and_out(names: list[str]) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GrowingManagement)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        management = f"http://127.0.0.1:{server.server_address[1]}/"
        argv = ["--watch", "--json", "--count", "2", "--interval", "0.5"]
        done = kiwipy("inspect", *argv, *names, "--management-url", management)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert second["connections"] == 3
    work, dead = second["queues"]
    assert (work["messages"], work["unacked"], work["consumers"]) == (6, 1, 2)
    # 10 in, 4 out and 6 more ready in one interval (whatever its exact length)
    assert work["rate_in"] > 0
    assert work["rate_out"] == pytest.approx(work["rate_in"] * 4 / 10, rel=0.02)
    assert work["depth_rate"] == pytest.approx(work["rate_in"] * 6 / 10, rel=0.02)
    assert first["queues"][0]["rate_in"] is None
    assert dead["dead_letter"] is True and dead["rate_in"] == 0
