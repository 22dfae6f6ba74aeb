"""The YAML fast path (libyaml) writes exactly what ``yaml.dump`` writes and reads what
``yaml.load(..., FullLoader)`` reads, honouring representers and constructors registered on
the default classes (issue 6)."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import pytest
import yaml

from kiwipy import _yaml_fast, encoders

from .._ci import require


@pytest.fixture(autouse=True)
def _libyaml() -> None:
    """These tests compare libyaml's output with PyYAML's: without libyaml (a PyYAML built
    without it) there is nothing to compare; under ``CI=true`` that fails."""
    require(_yaml_fast.available(), "PyYAML without libyaml")


SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    7,
    2**70,
    -(2**90),
    0.1,
    -0.0,
    1e16,
    1.5e-300,
    float("inf"),
    float("-inf"),
    float("nan"),
    "",
    "plain",
    "x" * 1024,
    "with space",
    "yes",
    "no",
    "null",
    "~",
    "1.5",
    "0x1F",
    "2020-01-01",
    "12:30:00",
    "- a",
    "a: b",
    "#comment",
    "'quoted'",
    '"double"',
    "trailing ",
    " leading",
    "a" * 40 + " " + "b" * 40,  # folded by both emitters, at different places
    "multi\nline\n",
    "tab\tbed",
    "caf\u00e9",
    "snow \u2603",
    "emoji \U0001f600",
    "nul\x00",
    "\u2028",
    b"bytes",
]

NESTED: list[Any] = [
    ("x" * 1024, True),
    ("task", False),
    {"result": 42},
    {"pending": None},
    {"exception": "boom", "exception_type": "builtins.ValueError", "traceback": "Tb\n  x\n"},
    {"body": {"pk": 12, "state": "running"}, "sender": 5, "subject": "a.b", "correlation_id": None},
    {"k" * 40: {"nested": [1, 2, (3, 4)], "deeper": {"a": [{"b": ["short one"]}]}}},
    [[[[[["deep"]]]]]],
    [[[[[[["deeper than the fast path goes"]]]]]]],
    {2: "int key", None: "none key", True: "bool key", 1.5: "float key"},
    {"": "empty key"},
    {("tuple", "key"): 1},
    {"a key with spaces": "value with spaces"},
    {"k" * 200: "long key"},
    [],
    {},
    (),
    ["caf\u00e9", {"x": "multi\nline"}],
    [str(uuid.uuid4()) for _ in range(5)],
]


@pytest.mark.parametrize(
    "value", SCALARS + NESTED + [[v] for v in SCALARS] + [{"k": v} for v in SCALARS]
)
def test_dump_is_byte_identical(value):
    expected = yaml.dump(value, encoding="utf-8")
    assert encoders.YAML.encode(value) == expected
    assert repr(encoders.YAML.decode(expected)) == repr(yaml.load(expected, Loader=yaml.FullLoader))


def test_the_fast_path_is_taken_for_typical_messages():
    for value in [("x" * 1024, True), {"result": [1, 2.5, None, "ok"]}, NESTED[5], NESTED[6]]:
        assert _yaml_fast.is_plain(value)
    for value in [
        "top-level scalar",
        {"": 1},
        {"x": b"bytes"},
        [uuid.uuid4()],
        NESTED[4],
        NESTED[8],
    ]:
        assert not _yaml_fast.is_plain(value)


def test_top_level_scalars_take_the_fast_path() -> None:
    for value in ["x" * 1024, "short spaced", 7, 1.5, None, True, "a:b", "123"]:
        assert _yaml_fast.is_plain_scalar(value)
    for value in ["a" * 40 + " " + "b" * 40, "caf\u00e9", "multi\nline", b"x", uuid.uuid4()]:
        assert not _yaml_fast.is_plain_scalar(value)


def test_a_large_top_level_string_is_encoded_quickly() -> None:
    """An RPC request of one 8 MB string: pure-Python PyYAML takes seconds (issue 11)."""
    value = "x" * (8 * 1024 * 1024)
    start = time.perf_counter()
    data = encoders.YAML.encode(value)
    elapsed = time.perf_counter() - start
    assert data == value.encode() + b"\n...\n"
    assert elapsed < 2.0  # libyaml: ~0.1 s; pure Python: ~6 s


def test_random_top_level_scalars_are_byte_identical() -> None:
    rnd = random.Random(11)
    checked = 0
    for _ in range(3000):
        value = _random_plain(rnd, depth=8)  # a scalar
        expected = yaml.dump(value, encoding="utf-8")
        assert encoders.YAML.encode(value) == expected, value
        checked += _yaml_fast.is_plain_scalar(value)
    assert checked > 2000


def _random_plain(rnd: random.Random, depth: int = 1) -> Any:
    scalars = [
        lambda: "".join(rnd.choice("ab :-#'\"?!{}[],&*|>%@`") for _ in range(rnd.randint(0, 20))),
        lambda: "".join(chr(rnd.randint(0x21, 0x7E)) for _ in range(rnd.randint(0, 300))),
        lambda: rnd.randint(-(10**25), 10**25),
        lambda: rnd.random() * 10 ** rnd.randint(-30, 30),
        lambda: rnd.choice([None, True, False, float("inf"), -0.0]),
    ]
    if depth > 7 or rnd.random() < 0.35:
        return rnd.choice(scalars)()
    kind = rnd.random()
    if kind < 0.3:
        return [_random_plain(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    if kind < 0.45:
        return tuple(_random_plain(rnd, depth + 1) for _ in range(rnd.randint(0, 3)))
    keys = [lambda: "k" * rnd.randint(1, 40), lambda: rnd.randint(0, 99), lambda: None]
    return {rnd.choice(keys)(): _random_plain(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}


def test_random_trees_are_byte_identical():
    rnd = random.Random(6)
    checked = 0
    for _ in range(3000):
        value = [_random_plain(rnd)]
        expected = yaml.dump(value, encoding="utf-8")
        assert encoders.YAML.encode(value) == expected, value
        checked += _yaml_fast.is_plain(value)
    assert checked > 1000  # most of them took the fast path


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


def _represent_point(dumper: Any, point: Point) -> Any:
    return dumper.represent_scalar("!point", str(point.x))


def _construct_point(loader: Any, node: Any) -> Point:
    return Point(int(loader.construct_scalar(node)))


def _own_copy(cls: type, name: str) -> Any:
    """A copy of the registry *cls* has of its own (``add_*`` mutate those in place)."""
    own = cls.__dict__.get(name)
    return None if own is None else dict(own)


@pytest.fixture
def point_tag():
    """``!point`` registered globally, as plumpy registers its tags."""
    saved_dumper = _own_copy(yaml.Dumper, "yaml_representers")
    saved_loader = _own_copy(yaml.FullLoader, "yaml_constructors")
    yaml.add_representer(Point, _represent_point)
    yaml.add_constructor("!point", _construct_point)
    yield
    for cls, name, saved in (
        (yaml.Dumper, "yaml_representers", saved_dumper),
        (yaml.FullLoader, "yaml_constructors", saved_loader),
    ):
        if saved is None:
            delattr(cls, name)
        else:
            setattr(cls, name, saved)
    for cls in (yaml.Loader, yaml.UnsafeLoader):
        cls.yaml_constructors.pop("!point", None)


def test_registered_representers_and_constructors_are_honoured(point_tag):
    value = {"where": Point(3), "plain": [1, 2]}
    data = encoders.YAML.encode(value)
    assert data == yaml.dump(value, encoding="utf-8")
    decoded = encoders.YAML.decode(data)
    assert isinstance(decoded["where"], Point) and decoded["where"].x == 3


def test_a_replaced_str_representer_turns_the_fast_path_off():
    def shout(dumper: Any, text: str) -> Any:
        return dumper.represent_scalar("tag:yaml.org,2002:str", text.upper())

    saved = _own_copy(yaml.Dumper, "yaml_representers")
    yaml.add_representer(str, shout)
    try:
        assert encoders.YAML.encode(["quiet"]) == yaml.dump(["quiet"], encoding="utf-8")
        assert b"QUIET" in encoders.YAML.encode(["quiet"])
    finally:
        if saved is None:
            del yaml.Dumper.yaml_representers
        else:
            yaml.Dumper.yaml_representers = saved


def test_loading_keeps_full_loader_semantics():
    assert encoders.YAML.decode(b"!!python/tuple [1, 2]\n") == (1, 2)
    with pytest.raises(encoders.DecodeError):
        encoders.YAML.decode(b"!!python/object/apply:os.system ['true']\n")
    with pytest.raises(encoders.DecodeError):
        encoders.YAML.decode(b"key: [unclosed\n")
