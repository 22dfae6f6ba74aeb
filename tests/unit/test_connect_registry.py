"""The URL scheme registry behind ``kiwipy.connect`` (``kiwipy._connect``)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import kiwipy
from kiwipy import _connect, communicate, communications


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    """Restore the registry each test changes."""
    saved = dict(_connect._registry)
    read = _connect._entry_points_read
    yield
    _connect._registry.clear()
    _connect._registry.update(saved)
    _connect._entry_points_read = read


class Fake:
    """What the fake transport's factory returns: the arguments it was called with."""

    def __init__(self, uri: Any, **kwargs: Any) -> None:
        self.uri = uri
        self.kwargs = kwargs


def test_one_connect_object() -> None:
    assert kiwipy.connect is communications.connect is communicate.connect


def test_builtin_schemes_in_order() -> None:
    assert _connect.schemes()[:3] == ("amqp", "amqps", "memory")


def test_registered_scheme_is_connected() -> None:
    kiwipy.register_scheme("fake", Fake)
    comm: Any = kiwipy.connect("fake://here", option=1)
    assert isinstance(comm, Fake)
    assert (comm.uri, comm.kwargs) == ("fake://here", {"option": 1})
    assert "fake" in _connect.schemes()


def test_factory_by_module_path_is_imported_on_first_use() -> None:
    kiwipy.register_scheme("fake", f"{__name__}:Fake")
    assert isinstance(kiwipy.connect("fake://"), Fake)


def test_list_of_urls_only_for_a_scheme_that_takes_one() -> None:
    kiwipy.register_scheme("fake", Fake)
    with pytest.raises(ValueError, match="a list of URIs must hold amqp:// or amqps://"):
        kiwipy.connect(["fake://a", "fake://b"])
    kiwipy.register_scheme("fake", Fake, multiple_urls=True, replace=True)
    comm: Any = kiwipy.connect(["fake://a", "fake://b"])
    assert comm.uri == ["fake://a", "fake://b"]
    with pytest.raises(ValueError, match="a list of URIs"):
        kiwipy.connect(["fake://a", "memory://b"])
    with pytest.raises(ValueError, match="a list of URIs"):
        kiwipy.connect([])


def test_registering_twice_needs_replace() -> None:
    with pytest.raises(ValueError, match="'amqp' is registered already"):
        kiwipy.register_scheme("amqp", Fake)
    kiwipy.register_scheme("amqp", Fake, replace=True)
    assert isinstance(kiwipy.connect("amqp://x"), Fake)


@pytest.mark.parametrize("scheme", ["", "fake://", "1x", "a b"])
def test_bad_scheme_is_refused(scheme: str) -> None:
    with pytest.raises(ValueError, match="not a URL scheme"):
        kiwipy.register_scheme(scheme, Fake)


def test_bad_factory_is_refused() -> None:
    with pytest.raises(ValueError, match="must be callable or 'module:attribute'"):
        kiwipy.register_scheme("fake", "no_colon")


def test_unknown_scheme_lists_the_registered_ones() -> None:
    kiwipy.register_scheme("fake", Fake)
    with pytest.raises(ValueError) as info:
        kiwipy.connect("nope://x")
    assert str(info.value) == (
        "Unknown communicator uri 'nope://x': use one of amqp://, amqps://, memory://, sqlite://, fake://"
    )


def _entry_points(**entries: str) -> Any:
    """A stand-in for :func:`importlib.metadata.entry_points` that counts its calls."""
    points = [SimpleNamespace(name=name, value=value) for name, value in entries.items()]
    calls: list[str] = []

    def entry_points(*, group: str) -> list[SimpleNamespace]:
        calls.append(group)
        return points if group == _connect.ENTRY_POINT_GROUP else []

    entry_points.calls = calls  # type: ignore[attr-defined]
    return entry_points


def test_entry_point_is_read_once_on_an_unknown_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    _connect._entry_points_read = False
    fake = _entry_points(fake=f"{__name__}:Fake", memory=f"{__name__}:Fake")
    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    with kiwipy.connect("memory://") as comm:
        assert isinstance(comm, kiwipy.Communicator)
    assert fake.calls == []  # a known scheme never reads them
    found: Any = kiwipy.connect("fake://there", x=2)
    assert isinstance(found, Fake)
    assert (found.uri, found.kwargs) == ("fake://there", {"x": 2})
    with pytest.raises(ValueError, match="memory://, sqlite://, fake://"):
        kiwipy.connect("other://")
    assert fake.calls == [_connect.ENTRY_POINT_GROUP]  # read once
    with kiwipy.connect("memory://") as comm:  # a built-in scheme keeps its factory
        assert isinstance(comm, kiwipy.Communicator)


def test_loading_the_registry_loads_no_transport() -> None:
    code = (
        "import sys, kiwipy; "
        "print(sorted(m for m in sys.modules if m in ('kiwipy.memory', 'kiwipy.rmq')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
