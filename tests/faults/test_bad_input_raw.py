"""Raw bad messages put straight on the broker (the RabbitMQ part of the hostile battery,
``tests/contract_battery.py``), beyond the kinds ``test_bad_input.py`` sends: a wrong content
type, no ``reply_to``, a 100 KB header table, bodies that decode to the wrong shape, an empty
body.

Each message is handled exactly once: its subscriber sees it once, or it is parked once in
``<queue>.dead``; the worker keeps serving; and once the worker is closed nothing is left in
the queue (a message going round in a redelivery loop would be).
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

import aiormq
import pytest
import yaml
from pamqp import commands as spec

from kiwipy import rmq

from ._scenario import SHARED_URL, Names, Tally, report, wait_until
from .test_bad_input import _drain

WAIT = 10.0
pytestmark = pytest.mark.integration

#: A header table of about 100 KB (a content header must fit in one frame: 128 KB).
BIG_HEADERS = {f"x-big-{n}": "h" * 1000 for n in range(100)}


def _task(name: str) -> bytes:
    return yaml.dump((name, False), encoding="utf-8")


#: name -> (body, properties, whether a subscriber must see it).
RAW_TASKS: dict[str, tuple[bytes, dict[str, Any], Optional[bool]]] = {
    "json-content-type": (_task("json-content-type"), {"content_type": "application/json"}, True),
    "binary-content-type": (
        b"\x00\xff\xfe\x80 not a task",
        {"content_type": "application/octet-stream"},
        False,
    ),
    "no-reply-to": (_task("no-reply-to"), {"reply_to": None}, True),
    "big-headers": (_task("big-headers"), {"headers": BIG_HEADERS}, True),
    "triple": (yaml.dump(("a", "b", "c"), encoding="utf-8"), {}, False),
    "scalar": (yaml.dump(42, encoding="utf-8"), {}, False),
    "list-pair": (yaml.dump(["list-pair", False], encoding="utf-8"), {}, None),
    "empty": (b"", {}, False),
    "no-reply-not-a-bool": (
        yaml.dump(("no-reply-not-a-bool", "maybe"), encoding="utf-8"),
        {},
        None,
    ),
}


async def _publish_raw(
    channel: aiormq.abc.AbstractChannel,
    exchange: str,
    routing_key: str,
    reply_queue: str,
    raw: dict[str, tuple[bytes, dict[str, Any], Optional[bool]]],
) -> None:
    for name, (body, extra, _) in raw.items():
        properties = {"correlation_id": name, "reply_to": reply_queue, **extra}
        await channel.basic_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=spec.Basic.Properties(**properties),
        )


async def test_battery_raw_tasks() -> None:
    names = Names()
    options = names.options()
    worker = await rmq.async_connect(SHARED_URL, **options)
    sender = await rmq.async_connect(SHARED_URL, **options)
    raw = await aiormq.connect(SHARED_URL)
    seen = Tally()
    try:
        await worker.add_task_subscriber(lambda _c, task: seen.add(repr(task)) or "done")
        channel = await raw.channel()
        reply_queue = (await channel.queue_declare("", exclusive=True)).queue
        await channel.queue_bind(reply_queue, options["task_exchange"], reply_queue)
        before = await sender.task_send("before")
        await _publish_raw(
            channel, options["task_exchange"], names.task_queue, reply_queue, RAW_TASKS
        )
        after = await sender.task_send("after")
        assert await asyncio.wait_for(asyncio.gather(before, after), WAIT) == ["done", "done"]

        parked: dict[str, int] = {}

        async def all_handled() -> bool:
            for message in await _drain(channel, f"{names.task_queue}.dead"):
                name = message.header.properties.correlation_id
                parked[name] = parked.get(name, 0) + 1
            return len(parked) + len(seen.seen) - 2 >= len(RAW_TASKS)  # 2: before, after

        await _wait_for(all_handled, "every raw task seen or parked")
        for name, (_, _, must_be_seen) in RAW_TASKS.items():
            was_seen = any(name in each for each in seen.seen)
            assert was_seen != (name in parked), (name, was_seen, parked)
            if must_be_seen is not None:
                assert was_seen == must_be_seen, (name, seen.seen, parked)
        assert seen.duplicates == 0 and set(parked.values()) == {1}, (seen.seen, parked)
        assert await asyncio.wait_for(await sender.task_send("last"), WAIT) == "done"
        await worker.disconnect()  # what it held unacknowledged goes back to the queue
        assert await _drain(channel, names.task_queue) == []
        report(
            "battery-raw-tasks",
            raw_sent=len(RAW_TASKS),
            seen_once=len(seen.seen) - 3,
            parked_once=len(parked),
            redelivered=seen.duplicates,
            left_in_queue=0,
        )
    finally:
        await raw.close()
        await worker.disconnect()
        await sender.disconnect()


async def _wait_for(condition: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await condition():
        assert loop.time() < deadline, f"{what}: not within {WAIT} s"
        await asyncio.sleep(0.05)


RAW_RPCS: dict[str, tuple[bytes, dict[str, Any], Optional[bool]]] = {
    "no-reply-to": (yaml.dump("no-reply-to", encoding="utf-8"), {"reply_to": None}, True),
    "json-content-type": (
        yaml.dump("json-content-type", encoding="utf-8"),
        {"content_type": "application/json"},
        True,
    ),
    "big-headers": (yaml.dump("big-headers", encoding="utf-8"), {"headers": BIG_HEADERS}, True),
    "empty": (b"", {}, None),
}


async def test_battery_raw_rpcs() -> None:
    names = Names()
    options = names.options()
    responder = await rmq.async_connect(SHARED_URL, **options)
    caller = await rmq.async_connect(SHARED_URL, **options)
    raw = await aiormq.connect(SHARED_URL)
    seen = Tally()
    try:
        await responder.add_rpc_subscriber(lambda _c, msg: seen.add(repr(msg)) or msg, "raw")
        channel = await raw.channel()
        reply_queue = (await channel.queue_declare("", exclusive=True)).queue
        await channel.queue_bind(reply_queue, options["message_exchange"], reply_queue)
        await _publish_raw(channel, options["message_exchange"], "[rpc].raw", reply_queue, RAW_RPCS)
        after = await caller.rpc_send("raw", "after")
        assert await asyncio.wait_for(after, WAIT) == "after"
        expected = [name for name, (*_, must) in RAW_RPCS.items() if must]
        await wait_until(
            lambda: all(any(n in each for each in seen.seen) for n in expected),
            WAIT,
            "the raw RPCs",
        )
        assert seen.duplicates == 0, seen.seen
        answers = [await caller.rpc_send("raw", n) for n in range(10)]
        assert await asyncio.wait_for(asyncio.gather(*answers), WAIT) == list(range(10))
        report("battery-raw-rpcs", raw_sent=len(RAW_RPCS), redelivered=seen.duplicates)
    finally:
        await raw.close()
        await responder.disconnect()
        await caller.disconnect()
