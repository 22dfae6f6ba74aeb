"""``kiwipy inspect`` shows how each task queue was declared and whether kiwipy 0.9 peers can
declare it (issue 11, item 10), without changing the queues."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from kiwipy import cli
from kiwipy.rmq import defaults
from kiwipy.rmq._options import resolve_options
from kiwipy.rmq.receive._topology import task_queue_arguments

KIWIPY09 = {"x-message-ttl": defaults.TASK_MESSAGE_TTL}


async def inspect(capsys: pytest.CaptureFixture[str], rmq_uri: str, *argv: str) -> str:
    code = await asyncio.to_thread(cli.main, ["inspect", "--url", rmq_uri, *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


async def test_inspect_tells_which_task_queues_kiwipy09_can_declare(
    capsys: pytest.CaptureFixture[str], rmq_uri: str, names: Any, raw_channel: Any
) -> None:
    queues = {
        "old": (True, KIWIPY09),
        "old-testing": (False, {**KIWIPY09, "x-expires": 10000}),
        "ours": (True, task_queue_arguments(f"{names.prefix}.ours", resolve_options({}))),
        "other": (True, {"x-max-length": 5}),
    }
    try:
        for suffix, (durable, arguments) in queues.items():
            name = f"{names.prefix}.{suffix}"
            await raw_channel.queue_declare(name, durable=durable, arguments=arguments)
        argv = [arg for suffix in queues for arg in ("--queue", f"{names.prefix}.{suffix}")]
        report = json.loads(await inspect(capsys, rmq_uri, "--json", *argv))
        found = {q["name"]: q.get("declaration") for q in report["queues"]}
        old, old_testing, ours, other = (found[f"{names.prefix}.{s}"] for s in queues)
        assert (old["declared_as"], old["kiwipy09"]) == ("kiwipy 0.9", "production")
        assert old["arguments"] == KIWIPY09 and old["durable"] is True
        assert old_testing["kiwipy09"] == "testing mode" and old_testing["durable"] is False
        assert (ours["declared_as"], ours["kiwipy09"]) == ("this library", None)
        assert ours["arguments"] == queues["ours"][1]
        assert "PRECONDITION_FAILED" in ours["kiwipy09_refusal"]
        assert "inequivalent arg" in ours["kiwipy09_refusal"]
        assert (other["declared_as"], other["kiwipy09"]) == (None, None)
        assert found[f"{names.prefix}.ours.dead"] is None  # 0.9 never declares these

        text = await inspect(capsys, rmq_uri, *argv)
        assert "kiwipy 0.9 peers outside testing mode can declare it" in text
        assert "kiwipy 0.9 peers in testing mode can declare it" in text
        assert "kiwipy 0.9 peers cannot declare it: a 0.9 sender fails with TaskRejected(" in text
        assert "task_queue_compat=True" in text

        # nothing changed: each queue still has exactly its own declaration
        for suffix, (durable, arguments) in queues.items():
            name = f"{names.prefix}.{suffix}"
            ok = await raw_channel.queue_declare(name, durable=durable, arguments=arguments)
            assert ok.message_count == 0
    finally:
        for suffix in queues:
            await raw_channel.queue_delete(f"{names.prefix}.{suffix}")
