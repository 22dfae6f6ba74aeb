"""docs/deployment.md's broker account, as written: its ``rabbitmqctl`` commands run on a
private node, then the page's URL (password percent-encoded) connects to the new virtual host,
and the account cannot reach the default one (issue 19, item 12)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import kiwipy

from .broker import PrivateBroker

PAGE = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def page_commands() -> list[list[str]]:
    """The ``rabbitmqctl`` arguments of the page's block named rabbitmq-user."""
    text = PAGE.read_text(encoding="utf-8")
    block = re.search(r"```\{code-block\} console\n:name: rabbitmq-user\n\n(.*?)```", text, re.S)
    assert block is not None
    commands = []
    for line in block.group(1).splitlines():
        words = shlex.split(line[2:]) if line.startswith("$ ") else []
        assert words[:2] == ["sudo", "rabbitmqctl"], line
        commands.append(words[2:])
    return commands


def page_url(broker: PrivateBroker) -> str:
    """The page's URL for the account, pointed at the private node."""
    match = re.search(r"amqp://myapp:\S+@broker\.example:5672/myapp", PAGE.read_text())
    assert match is not None
    return match.group(0).replace("broker.example:5672", f"127.0.0.1:{broker.amqp_port}")


def test_account_recipe(private_broker: PrivateBroker, unique_name: str) -> None:
    try:
        for args in page_commands():
            private_broker.rabbitmqctl(*args)
        url = page_url(private_broker)
        assert "S3cret%2Fp%40ss" in url  # the page's password 'S3cret/p@ss', encoded
        with kiwipy.connect(url, task_queue=unique_name, testing_mode=True) as comm:
            comm.add_rpc_subscriber(lambda _comm, msg: msg, "echo")
            assert comm.rpc_send("echo", "hello").result(timeout=5) == "hello"
        other = url.rsplit("/", 1)[0] + "/%2f"
        with pytest.raises(kiwipy.AccessRefused, match="virtual host '/' refused for user 'myapp'"):
            kiwipy.connect(other)
    finally:
        for cleanup in (["delete_user", "myapp"], ["delete_vhost", "myapp"]):
            try:
                private_broker.rabbitmqctl(*cleanup)
            except RuntimeError:
                pass  # the recipe failed before creating it
