"""``kiwipy dead list`` shows parked bodies without decoding the large ones: a task parked as
too large to decode must not take the command line's memory instead."""

from __future__ import annotations

from typing import Any

from kiwipy.cli import _dead_list
from kiwipy.encoders import YAML


def test_a_large_body_is_shown_as_bytes_not_decoded() -> None:
    decoded: list[int] = []

    def decode(body: bytes) -> Any:
        decoded.append(len(body))
        return YAML.decode(body)

    body = b"[[" + b"[]," * (256 * 1024 // 3) + b"[]], false]"
    text = _dead_list._preview(body, decode)
    assert decoded == []
    assert text.startswith("b'[[[],[],")
    assert len(text) <= 60


def test_a_small_body_is_decoded() -> None:
    assert _dead_list._preview(YAML.encode(("hello", False)), YAML.decode) == '"hello"'
