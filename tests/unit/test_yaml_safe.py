"""The ``yaml-safe`` decoder: what kiwipy 0.9 and plumpy peers send is read, nothing else."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

import kiwipy
from kiwipy import encoders
from kiwipy.encoders import YAML, YAML_SAFE

PID = uuid.UUID("12345678-1234-5678-1234-567812345678")

# (wire bytes as kiwipy 0.9 / plumpy peers write them, what yaml-safe builds)
ACCEPTED: list[tuple[bytes, Any]] = [
    (b"!!python/tuple\n- 21\n- false\n", (21, False)),  # every task message
    (
        b"result: 42\nhost:\n  hostname: h\n  pid: 7\n",
        {"result": 42, "host": {"hostname": "h", "pid": 7}},
    ),
    (b"pending: null\n", {"pending": None}),
    (b"null\n...\n", None),
    (b"!uuid '12345678-1234-5678-1234-567812345678'\n", PID),  # plumpy's process ids
    (
        b"intent: play\npid: !uuid 12345678-1234-5678-1234-567812345678\n",
        {"intent": "play", "pid": PID},
    ),
    (b"!!binary |\n  cmF3\n", b"raw"),
    (b"!!set {1: null}\n", {1}),
    (b"2026-12-04 10:00:00\n", datetime.datetime(2026, 12, 4, 10, 0)),
    (b"!!python/complex 1+2j\n", 1 + 2j),
    (b"!!python/str abc\n", "abc"),
    (b"!!python/bytes cmF3\n", b"raw"),
    (b"!!python/list [1, !!python/tuple [2]]\n", [1, (2,)]),
]

# Tags kiwipy 0.9's FullLoader (or an unsafe loader) would act on; yaml-safe builds nothing.
REFUSED = [
    b"!!python/object/apply:os.system ['true']\n",
    b'!!python/object/apply:builtins.exec ["import os"]\n',
    b"!!python/object/new:builtins.list [[1]]\n",
    b"!!python/object:uuid.UUID {int: 1}\n",
    b"!!python/name:os.system\n",
    b"!!python/module:os\n",
    b"!plumpy:Bundle {}\n",
    b"!anything-else 1\n",
]


@pytest.mark.parametrize(("data", "expected"), ACCEPTED)
def test_accepts_what_09_peers_send(data: bytes, expected: Any) -> None:
    decoded = YAML_SAFE.decode(data)
    assert decoded == expected
    assert type(decoded) is type(expected)


@pytest.mark.parametrize("data", REFUSED)
def test_refuses_every_other_tag_with_a_decode_error_naming_it(data: bytes) -> None:
    with pytest.raises(kiwipy.DecodeError) as raised:
        YAML_SAFE.decode(data)
    assert raised.value.encoder == "yaml-safe"
    assert str(raised.value).startswith("[yaml-safe] ")
    assert "could not determine a constructor" in str(raised.value)


def test_hostile_yaml_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile = f"!!python/object/apply:os.system ['touch {marker}']\n".encode()
    for encoder in (YAML, YAML_SAFE):
        with pytest.raises(kiwipy.DecodeError):
            encoder.decode(hostile)
    assert not marker.exists()


def test_constructors_registered_globally_are_not_used() -> None:
    class Loaded:
        pass

    yaml.add_constructor("!kiwitest-global", lambda _loader, _node: Loaded())
    yaml.SafeLoader.add_constructor("!kiwitest-global", lambda _loader, _node: Loaded())
    try:
        assert isinstance(YAML.decode(b"!kiwitest-global x\n"), Loaded)  # 0.9's behaviour
        with pytest.raises(kiwipy.DecodeError):
            YAML_SAFE.decode(b"!kiwitest-global x\n")
    finally:
        for loader in (yaml.Loader, yaml.FullLoader, yaml.UnsafeLoader, yaml.SafeLoader):
            loader.yaml_constructors.pop("!kiwitest-global", None)


@pytest.mark.parametrize("obj", [(21, False), {"result": [1, "two", 3.5]}, None, "hi"])
def test_encodes_the_same_bytes_as_yaml(obj: Any) -> None:
    assert YAML_SAFE.encode(obj) == YAML.encode(obj)
    assert YAML_SAFE.decode(YAML.encode(obj)) == obj


def test_selectable_by_name() -> None:
    assert encoders.get_encoder("yaml-safe") is YAML_SAFE
    assert encoders.resolve("yaml-safe") is YAML_SAFE
    assert YAML_SAFE.content_type is None  # as kiwipy 0.9
