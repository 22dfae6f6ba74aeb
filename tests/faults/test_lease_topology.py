"""What RabbitMQ 4 removed must not be used anywhere: transient non-exclusive queues and
global QoS. Checked on the broker itself (``rabbitmqctl``) while every kind of queue and
channel this library makes exists at once: task, dead-letter, lease, claim, worker and reply
queues, RPC and broadcast queues, classic and quorum, in testing mode and not.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from pamqp import commands as spec

from kiwipy.rmq.leases._leases import LEASE_HEADER, OWNER_HEADER, STRIKES_HEADER

from ._lease_support import Names, connect, outcome, wait_for
from .broker import PrivateBroker

pytestmark = pytest.mark.slow


def queue_properties(broker: PrivateBroker) -> list[dict[str, Any]]:
    out = broker.rabbitmqctl(
        "list_queues", "-q", "--formatter", "json",
        "name", "durable", "exclusive", "auto_delete", "type", "arguments",
    )  # fmt: skip
    queues: list[dict[str, Any]] = json.loads(out)
    return queues


def channel_prefetch(broker: PrivateBroker) -> list[dict[str, Any]]:
    out = broker.rabbitmqctl(
        "list_channels", "-q", "--formatter", "json", "name", "prefetch_count",
        "global_prefetch_count",
    )  # fmt: skip
    channels: list[dict[str, Any]] = json.loads(out)
    return channels


async def _exercise(broker: PrivateBroker, names: Names, **options: Any) -> list[Any]:
    """Make every kind of queue: tasks, a lease, a check, a take-over (claim), RPC, broadcasts."""
    owner = await connect(broker, names, task_lease_after=0.3, lease_interval=1.0, **options)
    checker = await connect(broker, names, lease_interval=1.0, **options)
    ran: list[Any] = []

    async def slow(_c: Any, task: Any) -> Any:
        ran.append(task)
        await asyncio.sleep(task)
        return task

    await owner.add_task_subscriber(slow)
    future = await checker.task_send(2.5)  # leased after 0.3 s, checked by both
    await wait_for(lambda: bool(ran), 10, "the task starts")
    await checker.add_task_subscriber(slow)
    await owner.add_rpc_subscriber(lambda _c, msg: msg, f"rpc-{uuid.uuid4().hex[:6]}")
    await owner.add_broadcast_subscriber(lambda *_args: None)
    await checker.broadcast_send("hello")
    # A lease of an owner that does not exist, one strike from a take-over: claims a queue.
    headers: dict[str, Any] = {
        OWNER_HEADER: "gone",
        LEASE_HEADER: uuid.uuid4().hex,
        STRIKES_HEADER: 1,
    }
    props = spec.Basic.Properties(headers=headers, delivery_mode=2, correlation_id="orphan")
    session = checker._session  # the simplest way to publish a raw copy through the library
    await session.publish("", names.task_queue, b"- 0.5\n- true\n", props, True)
    await wait_for(lambda: len(ran) >= 2, 10, "the orphaned lease is taken over")
    return [owner, checker, future]


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="classic"),
        pytest.param({"testing_mode": True, "task_queue_compat": False}, id="classic-testing"),
        pytest.param({"task_queue_type": "quorum"}, id="quorum"),
        pytest.param({"task_queue_type": "quorum", "testing_mode": True}, id="quorum-testing"),
    ],
)
async def test_no_transient_nonexclusive_queue_and_no_global_qos(
    timeout_broker: PrivateBroker, options: dict[str, Any]
) -> None:
    names = Names()
    owner, checker, future = await _exercise(timeout_broker, names, **options)
    try:
        queues = await asyncio.to_thread(queue_properties, timeout_broker)
        prefixes = ("kl.", "kiwipy.worker.", "amq.gen", "broadcast-")
        ours = [q for q in queues if q["name"].startswith(prefixes)]
        kinds = {q["name"].removeprefix(names.task_queue) for q in ours}
        assert {"", ".dead", ".leases"} <= kinds
        assert any(kind.startswith(".claim.") for kind in kinds), kinds
        assert any(q["name"].startswith("kiwipy.worker.") for q in ours)
        for queue in ours:
            assert queue["durable"] or queue["exclusive"], queue
        quorum = options.get("task_queue_type") == "quorum"
        for suffix in ("", ".dead", ".leases"):
            info = next(q for q in ours if q["name"] == names.task_queue + suffix)
            assert info["type"] == ("quorum" if quorum else "classic"), info
        channels = await asyncio.to_thread(channel_prefetch, timeout_broker)
        assert channels and all(c["global_prefetch_count"] == 0 for c in channels), channels
        assert await outcome(future, 15) == 2.5
    finally:
        await owner.disconnect()
        await checker.disconnect()
