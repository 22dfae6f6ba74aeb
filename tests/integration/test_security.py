"""What docs/security.md promises about hostile input and credentials, checked on RabbitMQ:
hostile YAML runs no code and is answered, a huge send is refused before it is encoded, and a
password never shows in errors, logs, ``repr`` or the command line's output."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiormq
import pytest
from pamqp import commands as spec

import kiwipy
from kiwipy import encoders, rmq

from .conftest import Names

WAIT = 10.0
HUGE = "x" * (200 * 1024 * 1024)


async def test_a_200_mb_send_is_refused_at_once(communicator: rmq.RmqCommunicator) -> None:
    sends = {
        "task": lambda: communicator.task_send(HUGE),
        "rpc": lambda: communicator.rpc_send("anybody", HUGE),
        "broadcast": lambda: communicator.broadcast_send(HUGE),
        "nested task": lambda: communicator.task_send({"inputs": [HUGE]}),
    }
    for kind, send in sends.items():
        began = time.monotonic()
        with pytest.raises(kiwipy.MessageTooLarge) as raised:
            await send()
        took = time.monotonic() - began
        assert took < 1.0, f"{kind}: refused after {took:.2f} s"  # not encoded first
        assert raised.value.limit == 16 * 1024 * 1024  # the default max_message_size
        assert raised.value.size >= len(HUGE)
    assert await communicator.task_send(1, no_reply=True) is None  # it still sends


async def _reply(channel: Any, queue: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        got = await channel.basic_get(queue, no_ack=True)
        if isinstance(got.delivery, spec.Basic.GetOk):
            reply: dict[str, Any] = encoders.YAML_SAFE.decode(got.body)
            return reply
        assert asyncio.get_running_loop().time() < deadline, "no reply"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("encoder", ["yaml", "yaml-safe"])
async def test_hostile_yaml_runs_no_code_and_is_answered(
    rmq_uri: str, names: Names, tmp_path: Path, encoder: str
) -> None:
    marker = tmp_path / "ran"
    hostile = [
        f"!!python/object/apply:os.system ['touch {marker}']\n",
        f"!!python/tuple [!!python/object/apply:os.system ['touch {marker}'], false]\n",
        f"!!python/tuple [!!python/object/new:os.system ['touch {marker}'], false]\n",
    ]
    worker = await rmq.async_connect(rmq_uri, **names.options(encoder=encoder))
    raw = await aiormq.connect(rmq_uri)
    try:
        await worker.add_task_subscriber(lambda _c, task: task)
        channel = await raw.channel()
        reply_queue = (await channel.queue_declare("", exclusive=True)).queue
        await channel.queue_bind(reply_queue, names.task_exchange, reply_queue)
        for number, body in enumerate(hostile):
            props = spec.Basic.Properties(correlation_id=str(number), reply_to=reply_queue)
            await channel.basic_publish(
                body.encode(), exchange=names.task_exchange, routing_key=names.task_queue,
                properties=props,
            )  # fmt: skip
            reply = await _reply(channel, reply_queue)
            assert f"[{encoder}] cannot decode" in reply["exception"], reply
        parked = [await channel.basic_get(f"{names.task_queue}.dead") for _ in hostile]
        assert [p.header.properties.headers["x-kiwipy-reason"] for p in parked] == [
            "undecodable"
        ] * len(hostile)
        assert not marker.exists()
        assert await asyncio.wait_for(await worker.task_send("still here"), WAIT) == "still here"
    finally:
        await raw.close()
        await worker.disconnect()


def test_a_wrong_password_shows_nowhere(
    rmq_uri: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("aiormq", "aio_pika", "kiwipy"):
        caplog.set_level(logging.DEBUG, logger=name)
    canary = "CANARY-not-the-password"
    url = rmq_uri.replace("://guest:guest@", f"://guest:{canary}@")
    assert canary in url, "the test broker URL must carry guest:guest"
    with pytest.raises(kiwipy.AccessRefused) as raised:
        kiwipy.connect(url)
    texts = [str(raised.value), repr(raised.value), caplog.text]
    cli = subprocess.run(
        [sys.executable, "-m", "kiwipy", "inspect", "--url", url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode != 0
    texts += [cli.stdout, cli.stderr, *capfd.readouterr()]
    assert [text for text in texts if canary in text] == []
    assert "refused the login" in str(raised.value)
    assert "refused the login" in cli.stderr
