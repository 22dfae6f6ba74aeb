"""Least privilege: the permissions of ``docs/security.md`` are enough for everything kiwipy
does, and taking one away gives an :class:`~kiwipy.AccessRefused` naming it.

Each test makes its own vhost and user with ``rabbitmqctl`` (unique names, deleted after), and
grants the documented regular expressions for its prefix. The user's password is a canary:
it must appear in no error, log line (DEBUG, aiormq and aio-pika included), ``repr`` or CLI
output.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pamqp import commands as spec

import kiwipy
from kiwipy import rmq
from kiwipy.rmq.leases._leases import LEASE_HEADER, OWNER_HEADER, STRIKES_HEADER

from .._ci import require
from .._names import BrokerNames
from .._rabbitmqctl import BrokerAccount, system_command

WAIT = 15.0


def permissions(prefix: str) -> tuple[str, str, str]:
    """:returns: the (configure, write, read) regular expressions of ``docs/security.md`` for
    a deployment whose exchanges and task queues are all named ``<prefix>.*``."""
    ours = rf"{re.escape(prefix)}\..*|broadcast-.*|kiwipy\.worker\..*|amq\.gen-.*"
    return f"^({ours})$", rf"^({ours}|amq\.default)$", f"^({ours})$"


def test_documented_default_permissions() -> None:
    """The regexes shown for the default names are the ones this test grants."""
    configure, write, read = permissions("kiwipy")
    assert configure == read == r"^(kiwipy\..*|broadcast-.*|kiwipy\.worker\..*|amq\.gen-.*)$"
    assert write == r"^(kiwipy\..*|broadcast-.*|kiwipy\.worker\..*|amq\.gen-.*|amq\.default)$"


@pytest.fixture(scope="module")
def account(rmq_uri: str) -> Iterator[BrokerAccount]:
    """One vhost and user for the module (each test uses names of its own in it)."""
    command = system_command()
    require(bool(command), "rabbitmqctl is not installed")
    made = BrokerAccount(command)
    try:
        made.__enter__()
    except (subprocess.CalledProcessError, OSError) as exc:
        require(False, f"rabbitmqctl cannot manage the local node: {exc}")
    try:
        yield made
    finally:
        made.__exit__(None, None, None)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("aiormq", "aio_pika", "kiwipy"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def kiwipy_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiwipy", *argv], capture_output=True, text=True, timeout=60
    )


async def _orphan_lease(comm: Any, queue: str) -> None:
    """Publish a lease copy whose owner does not exist, one strike from a take-over (which
    claims it with a ``<queue>.claim.<id>`` queue)."""
    headers = {OWNER_HEADER: "gone", LEASE_HEADER: uuid.uuid4().hex, STRIKES_HEADER: 1}
    props = spec.Basic.Properties(headers=headers, delivery_mode=2, correlation_id="orphan")
    await comm._session.publish("", queue, b"- 0.2\n- true\n", props, True)


async def _exercise(url: str, names: BrokerNames) -> dict[str, Any]:
    """Tasks (with a lease, a check and a take-over), a named queue, a parked task, RPC and
    broadcasts, as the restricted user. :returns: what each gave."""
    leases = {"task_lease_after": 0.3, "lease_interval": 1.0, "lease_check_timeout": 1.0}
    owner = await rmq.async_connect(url, **names.options(**leases))
    checker = await rmq.async_connect(url, **names.options(**leases))
    packer = await rmq.async_connect(url, **names.options(encoder="msgpack"))
    seen: dict[str, Any] = {}
    try:

        async def work(_comm: Any, task: Any) -> Any:
            await asyncio.sleep(task)
            return task

        await owner.add_task_subscriber(work)
        leased = await checker.task_send(1.5)  # a lease after 0.3 s, checked after 1 s
        await checker.add_task_subscriber(work)
        await _orphan_lease(checker, names.task_queue)
        await packer.task_send(0.0, no_reply=True)  # msgpack: undecodable here, parked
        named = await owner.task_queue(f"{names.prefix}.named")
        await named.add_task_subscriber(lambda _c, task: task + 1)
        seen["named"] = await asyncio.wait_for(await named.task_send(1), WAIT)
        await owner.add_rpc_subscriber(lambda _c, msg: msg * 3, "tripler")
        seen["rpc"] = await asyncio.wait_for(await checker.rpc_send("tripler", 2), WAIT)
        heard: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await owner.add_broadcast_subscriber(
            lambda _c, body, *_rest: heard.done() or heard.set_result(body)
        )
        await checker.broadcast_send("hello", sender="me", subject="news")
        seen["broadcast"] = await asyncio.wait_for(heard, WAIT)
        seen["leased"] = await asyncio.wait_for(leased, WAIT)
        seen["repr"] = " ".join(map(repr, (owner, checker, named)))
    finally:
        for comm in (owner, checker, packer):
            await comm.disconnect()
    return seen


async def test_documented_permissions_are_enough(
    account: BrokerAccount, debug_logs: pytest.LogCaptureFixture
) -> None:
    names = BrokerNames("kp", testing_mode=True)
    account.permit(*permissions(names.prefix))
    url = account.url()
    seen = await _exercise(url, names)
    assert (seen["named"], seen["rpc"], seen["broadcast"], seen["leased"]) == (2, 6, "hello", 1.5)
    queues = account.ctl("list_queues", "-q", "-p", account.vhost, "name", "messages")
    assert f"{names.task_queue}.leases" in queues
    assert re.search(rf"^{re.escape(names.task_queue)}\.dead\s+1$", queues, re.M), queues
    exchanges = ["--message-exchange", names.message_exchange]
    exchanges += ["--task-exchange", names.task_exchange]
    inspect = kiwipy_cli("inspect", "--url", url, "--queue", names.task_queue, *exchanges)
    assert inspect.returncode == 0, inspect.stderr
    assert names.task_queue in inspect.stdout
    dead = kiwipy_cli("dead", "list", "--url", url, "--queue", names.task_queue, "--json")
    assert dead.returncode == 0, dead.stderr
    assert '"undecodable"' in dead.stdout
    requeue = kiwipy_cli("dead", "requeue", "--all", "--url", url, "--queue", names.task_queue)
    assert requeue.returncode == 0, requeue.stderr
    cli_names = ["--task-exchange", f"{names.prefix}.cli.tasks", "--queue", f"{names.prefix}.q"]
    cli_names += ["--message-exchange", f"{names.prefix}.cli.messages"]
    sent = kiwipy_cli("send", "--url", url, *cli_names, "1")  # not in testing mode
    assert sent.returncode == 0, sent.stderr
    outputs = [seen["repr"], debug_logs.text, inspect.stdout, inspect.stderr, dead.stdout]
    outputs += [dead.stderr, requeue.stdout, requeue.stderr, sent.stdout, sent.stderr]
    assert "aiormq" in debug_logs.text or "Connecting" in debug_logs.text  # logs were seen
    assert not [text for text in outputs if account.password in text]


async def _refusal(url: str, names: BrokerNames) -> kiwipy.AccessRefused:
    with pytest.raises(kiwipy.AccessRefused) as raised:
        comm = await rmq.async_connect(url, **names.options())
        try:
            await comm.add_task_subscriber(lambda _c, task: task)
            await asyncio.wait_for(await comm.task_send(1), WAIT)
        finally:
            await comm.disconnect()
    return raised.value


@pytest.mark.parametrize("taken", ["configure", "write", "read"])
async def test_a_missing_permission_is_named(
    account: BrokerAccount, debug_logs: pytest.LogCaptureFixture, taken: str
) -> None:
    names = BrokerNames("kp", testing_mode=True)
    granted = dict(zip(("configure", "write", "read"), permissions(names.prefix)))
    granted[taken] = "^$"
    account.permit(granted["configure"], granted["write"], granted["read"])
    error = await _refusal(account.url(), names)
    assert error.permission is not None and taken in error.permission, str(error)
    assert error.user == account.user and error.vhost == account.vhost
    assert f"lacks the {error.permission} permission on {error.resource}" in str(error)
    assert account.password not in str(error) + repr(error) + debug_logs.text
    cli_names = [f"{names.prefix}.cli.tasks", f"{names.prefix}.cli.queue"]  # not testing mode
    cli = kiwipy_cli("send", "--url", account.url(), "--task-exchange", cli_names[0],
                     "--queue", cli_names[1], "1")  # fmt: skip
    assert cli.returncode != 0
    assert "lacks the " in cli.stderr and taken in cli.stderr, cli.stderr
    assert account.password not in cli.stdout + cli.stderr


async def test_a_refused_login_or_vhost(
    account: BrokerAccount, debug_logs: pytest.LogCaptureFixture
) -> None:
    names = BrokerNames("kp", testing_mode=True)
    account.ctl("clear_permissions", "-p", account.vhost, account.user)
    with pytest.raises(kiwipy.AccessRefused) as raised:
        await rmq.async_connect(account.url().replace(account.password, "CANARY-wrong"))
    assert "refused the login" in str(raised.value)
    assert isinstance(raised.value, ConnectionError)  # what kiwipy 0.9 let through
    with pytest.raises(kiwipy.AccessRefused) as raised:  # no permissions in the vhost
        await rmq.async_connect(account.url(), **names.options())
    assert f"may not use vhost '{account.vhost}'" in str(raised.value)
    assert "CANARY-wrong" not in debug_logs.text
    assert account.password not in str(raised.value) + debug_logs.text
