"""The naming rules and limits every transport shares (``kiwipy._limits``), as a table."""

from __future__ import annotations

from typing import Any, Callable

import pytest

import kiwipy
from kiwipy import _limits

E = "\u00e9"  # two bytes of UTF-8

ACCEPTED: list[tuple[Callable[[Any], str], Any, str]] = [
    (_limits.rpc_identifier, "pid", "pid"),
    (_limits.rpc_identifier, 42, "42"),
    (_limits.rpc_identifier, "a#b.x*", "a#b.x*"),
    (_limits.rpc_identifier, E * 124 + "x", E * 124 + "x"),  # 249 bytes
    (_limits.task_queue_name, "kiwipy.tasks", "kiwipy.tasks"),
    (_limits.task_queue_name, "q" * 248, "q" * 248),
    (_limits.task_queue_name, "amq", "amq"),
    (_limits.task_queue_name, "a-z_A.Z:0@9,/ #x", "a-z_A.Z:0@9,/ #x"),
    (_limits.exchange_name, "kiwipy.messages", "kiwipy.messages"),
    (_limits.exchange_name, "e" * 212, "e" * 212),
]

REFUSED: list[tuple[Callable[[Any], str], Any, str]] = [
    (_limits.rpc_identifier, E * 200, "400 bytes of UTF-8, over the limit of 249 bytes"),
    (_limits.rpc_identifier, "x" * 250, "short string of 255 bytes"),
    (_limits.rpc_identifier, "", "empty"),
    (_limits.rpc_identifier, "#", "wildcards"),
    (_limits.rpc_identifier, "a.*", "wildcards"),
    (_limits.rpc_identifier, "#.b", "wildcards"),
    (_limits.rpc_identifier, "\ud800", "UTF-8"),
    (_limits.task_queue_name, "", "empty"),
    (_limits.task_queue_name, "q" * 249, "over the limit of 248 bytes"),
    (_limits.task_queue_name, "amq.x", "reserved"),
    (_limits.task_queue_name, "caf" + E, "only a-z"),
    (_limits.task_queue_name, "tasks!", "only a-z"),
    (_limits.task_queue_name, "#", "wildcard"),
    (_limits.task_queue_name, "a.#.b", "wildcard"),
    (_limits.task_queue_name, b"tasks", "a str is needed, not bytes"),
    (_limits.task_queue_name, None, "a str is needed"),
    (_limits.exchange_name, "", "empty"),
    (_limits.exchange_name, "e" * 213, "over the limit of 212 bytes"),
    (_limits.exchange_name, "amq.topic", "reserved"),
    (_limits.exchange_name, "caf" + E, "only a-z"),
]


@pytest.mark.parametrize(("check", "value", "expected"), ACCEPTED)
def test_accepted(check: Callable[[Any], str], value: Any, expected: str) -> None:
    assert check(value) == expected


@pytest.mark.parametrize(("check", "value", "reason"), REFUSED)
def test_refused(check: Callable[[Any], str], value: Any, reason: str) -> None:
    with pytest.raises(kiwipy.InvalidName, match=reason) as info:
        check(value)
    assert isinstance(info.value, ValueError)
    assert info.value.value == value
    assert info.value.field in str(info.value)


def test_an_identifier_whose_str_fails() -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

    with pytest.raises(kiwipy.InvalidName, match="str"):
        _limits.rpc_identifier(Bad())


def test_short_strings_and_sizes() -> None:
    assert _limits.check_short_string("x" * 255, "routing key") == "x" * 255
    with pytest.raises(kiwipy.InvalidName, match="routing key"):
        _limits.check_short_string("x" * 256, "routing key")
    with pytest.raises(kiwipy.InvalidName, match="not int"):
        _limits.check_short_string(1, "exchange name")
    assert _limits.check_size(b"x" * 10, 10) == b"x" * 10
    with pytest.raises(kiwipy.MessageTooLarge, match="11 bytes, over the limit of 10"):
        _limits.check_size(b"x" * 11, 10)


def test_options() -> None:
    _limits.check_options({"task_queue": "q", "message_exchange": "m", "encoder": "json"})
    with pytest.raises(kiwipy.InvalidName, match="task_exchange option"):
        _limits.check_options({"task_exchange": "x" * 300})
    with pytest.raises(kiwipy.InvalidName, match="task queue name"):
        _limits.check_options({"task_queue": ""})
