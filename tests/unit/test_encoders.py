"""Encoders: one table of (encoder, object, bytes, decoded) checked in both directions."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
import yaml

import kiwipy
from kiwipy import encoders
from kiwipy.encoders import JSON, MSGPACK, YAML

_SAME = object()  # decoded value equals the encoded object

# (encoder, object, exact bytes, decoded object). The YAML rows are kiwipy 0.9's wire format.
CASES: list[tuple[encoders.Encoder, Any, bytes, Any]] = [
    (YAML, (21, False), b"!!python/tuple\n- 21\n- false\n", _SAME),  # a task message
    (YAML, {"result": 42}, b"result: 42\n", _SAME),
    (YAML, {"pending": None}, b"pending: null\n", _SAME),
    (YAML, {"exception": "task boom"}, b"exception: task boom\n", _SAME),
    (YAML, None, b"null\n...\n", _SAME),
    (YAML, "hi", b"hi\n...\n", _SAME),
    (YAML, [1, "two", 3.5], b"- 1\n- two\n- 3.5\n", _SAME),
    (JSON, (21, False), b"[21,false]", [21, False]),
    (JSON, {"result": 42}, b'{"result":42}', _SAME),
    (JSON, None, b"null", _SAME),
    (JSON, [1, "two", 3.5], b'[1,"two",3.5]', _SAME),
    (MSGPACK, (21, False), b"\x92\x15\xc2", [21, False]),
    (MSGPACK, {"result": 42}, b"\x81\xa6result*", _SAME),
    (MSGPACK, None, b"\xc0", _SAME),
    (MSGPACK, b"raw", b"\xc4\x03raw", _SAME),
]
IDS = [f"{enc.name}-{obj!r}" for enc, obj, _, _ in CASES]


@pytest.mark.parametrize(("encoder", "obj", "data", "decoded"), CASES, ids=IDS)
def test_encode(encoder: encoders.Encoder, obj: Any, data: bytes, decoded: Any) -> None:
    assert encoder.encode(obj) == data


@pytest.mark.parametrize(("encoder", "obj", "data", "decoded"), CASES, ids=IDS)
def test_decode(encoder: encoders.Encoder, obj: Any, data: bytes, decoded: Any) -> None:
    assert encoder.decode(data) == (obj if decoded is _SAME else decoded)


@pytest.mark.parametrize("encoder", [YAML, JSON, MSGPACK], ids=lambda e: e.name)
def test_encode_error_names_the_encoder(encoder: encoders.Encoder) -> None:
    with pytest.raises(kiwipy.EncodeError) as info:
        encoder.encode(threading.Lock())
    assert info.value.encoder == encoder.name
    assert str(info.value).startswith(f"[{encoder.name}]")
    assert isinstance(info.value, (kiwipy.KiwiError, TypeError))


@pytest.mark.parametrize(
    ("encoder", "data"),
    [(YAML, b"!!python/object:uuid.UUID {}"), (YAML, b"a: [b"), (JSON, b"{"), (MSGPACK, b"\xc1")],
    ids=["yaml-unsafe", "yaml-syntax", "json", "msgpack"],
)
def test_decode_error_names_the_encoder(encoder: encoders.Encoder, data: bytes) -> None:
    with pytest.raises(kiwipy.DecodeError) as info:
        encoder.decode(data)
    assert info.value.encoder == encoder.name
    assert str(info.value).startswith(f"[{encoder.name}]")
    assert isinstance(info.value, ValueError)


def test_content_types() -> None:
    assert (YAML.content_type, JSON.content_type) == (None, "application/json")
    assert MSGPACK.content_type == "application/msgpack"


class Tagged:
    def __init__(self, value: str) -> None:
        self.value = value


def _represent(dumper: yaml.Dumper, data: Tagged) -> Any:
    return dumper.represent_scalar("!kiwipy-test-tagged", data.value)


def test_yaml_honours_hooks_registered_the_kiwipy_09_way() -> None:
    """Clients (plumpy) register representers on ``yaml.Dumper`` and constructors for the
    default loaders; the YAML encoder must use exactly those."""
    yaml.add_representer(Tagged, _represent)
    yaml.add_constructor("!kiwipy-test-tagged", lambda loader, node: Tagged(node.value))
    data = YAML.encode({"pid": Tagged("1234")})
    assert data == b"pid: !kiwipy-test-tagged '1234'\n"
    assert YAML.decode(data)["pid"].value == "1234"


def test_yaml_refuses_arbitrary_objects() -> None:
    """The default Dumper writes python/object tags that FullLoader refuses: kiwipy 0.9 sent
    them and no receiver could read them; here the sender gets the error."""
    with pytest.raises(kiwipy.EncodeError, match="python/object:uuid.UUID"):
        YAML.encode(uuid.UUID(int=1))
    data = yaml.dump(uuid.UUID(int=1), encoding="utf-8")  # what kiwipy 0.9 would send
    with pytest.raises(kiwipy.DecodeError):
        YAML.decode(data)


def test_callable_pair() -> None:
    encoder = encoders.resolve(lambda obj: json.dumps(obj).encode(), json.loads)
    assert isinstance(encoder, encoders.CallableEncoder)
    assert encoder.decode(encoder.encode({"a": [1]})) == {"a": [1]}
    with pytest.raises(kiwipy.EncodeError, match=encoder.name):
        encoder.encode(object())


def test_callable_returning_text_is_an_encode_error() -> None:
    encoder = encoders.CallableEncoder(json.dumps, json.loads, "text")  # type: ignore[arg-type]
    with pytest.raises(kiwipy.EncodeError, match=r"\[text\] encoder returned str"):
        encoder.encode(1)


def test_resolve() -> None:
    assert encoders.resolve() is YAML
    assert encoders.resolve("json") is JSON
    assert encoders.resolve(MSGPACK) is MSGPACK
    half = encoders.resolve(decoder=yaml.safe_load)  # kiwipy 0.9 allowed either half
    assert half.decode(YAML.encode({"a": 1})) == {"a": 1}
    with pytest.raises(ValueError, match="not both"):
        encoders.resolve(JSON, json.loads)
    with pytest.raises(ValueError, match="yaml"):
        encoders.get_encoder("pickle")
