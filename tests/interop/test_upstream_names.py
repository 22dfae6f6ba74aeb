"""Every name kiwipy 0.9 exposed, and every kiwipy name its real clients use, is here.

Two sources, neither typed by hand:

* kiwipy 0.9 itself, from the package index in its own venv (``scripts/kiwipy09-venv``):
  ``names09.py`` lists what each of its public modules exposes, star imports included;
* the installed sources of aiida-core 2.9 and plumpy 0.26 (``scripts/aiida-venv``): every
  ``import kiwipy...``, ``from kiwipy... import X``, and attribute chain rooted at such an
  import (``kiwipy.rmq.RmqIncomingTask``, ``communications.UnroutableError`` after ``from
  kiwipy import communications``) is resolved against this library.

``import aiida.engine`` failed with an ImportError on this library before
(``from kiwipy.communications import UnroutableError``) while plumpy's own test suite passed.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kiwipy
import kiwipy.rmq

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.interop]


def _venv_python(script: str, *args: str) -> str:
    out = subprocess.run(
        [str(ROOT / "scripts" / script), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return out.stdout.strip().splitlines()[-1]


def _names(python: str) -> dict[str, dict[str, str]]:
    out = subprocess.run(
        [python, str(Path(__file__).with_name("list_names.py"))],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(out.stdout)


def test_every_name_kiwipy09_exposed_is_in_the_same_module() -> None:
    upstream = _names(_venv_python("kiwipy09-venv"))
    ours = _names(sys.executable)
    assert "UnroutableError" in upstream["kiwipy.communications"]  # what AiiDA imports
    missing = [
        f"{module}.{name}"
        for module, names in upstream.items()
        for name in names
        if name not in ours.get(module, {})
    ]
    assert not missing, f"kiwipy 0.9 names missing here: {missing}"
    different = [
        f"{module}.{name} is not kiwipy.{name}"
        for module, names in upstream.items()
        for name, kind in names.items()
        if kind == "top" and ours[module][name] != "top"
    ]
    assert not different, different


def kiwipy_references(source: str) -> set[str]:
    """Dotted kiwipy paths that *source* imports or reaches through an imported name."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> the kiwipy path it stands for
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "kiwipy":
                    found.add(alias.name)
                    local = alias.asname or "kiwipy"
                    bound[local] = alias.name if alias.asname else "kiwipy"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "kiwipy":
                for alias in node.names:
                    path = node.module if alias.name == "*" else f"{node.module}.{alias.name}"
                    found.add(path)
                    bound[alias.asname or alias.name] = path
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain: list[str] = []
            current: ast.expr = node
            while isinstance(current, ast.Attribute):
                chain.append(current.attr)
                current = current.value
            if isinstance(current, ast.Name) and current.id in bound:
                found.add(".".join([bound[current.id], *reversed(chain)]))
    return found


def resolve(path: str) -> Any:
    """The object at dotted *path*: the longest importable module, then attributes."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def test_resolve_reports_what_is_missing() -> None:
    """The scanner and resolver find what they should (or the client test proves nothing)."""
    source = (
        "import kiwipy\nfrom kiwipy import communications\nimport kiwipy.rmq as r\n"
        "from kiwipy.communications import UnroutableError\n"
        "x = kiwipy.rmq.RmqIncomingTask\ny = communications.NoSuchThing\nz = r.tasks\n"
    )
    assert kiwipy_references(source) >= {
        "kiwipy.rmq.RmqIncomingTask",
        "kiwipy.communications.NoSuchThing",
        "kiwipy.communications.UnroutableError",
        "kiwipy.rmq.tasks",
    }
    assert resolve("kiwipy.communications.UnroutableError") is kiwipy.UnroutableError
    with pytest.raises(AttributeError):
        resolve("kiwipy.communications.NoSuchThing")


def _client_sources() -> dict[str, Path]:
    python = Path(_venv_python("aiida-venv"))
    venv = python.parent.parent
    found = {}
    for package in ("aiida", "plumpy"):
        [directory] = venv.glob(f"lib/python*/site-packages/{package}")
        found[package] = directory
    return found


@pytest.mark.slow
def test_every_kiwipy_name_aiida_and_plumpy_use_resolves() -> None:
    failures, checked = [], {}
    for package, directory in _client_sources().items():
        paths: set[str] = set()
        for file in directory.rglob("*.py"):
            paths |= kiwipy_references(file.read_text(encoding="utf-8"))
        checked[package] = len(paths)
        for path in sorted(paths):
            try:
                resolve(path)
            except (ImportError, AttributeError) as exc:
                failures.append(f"{package}: {path} ({exc!r})")
    # The scan must have found what these clients are known to use, or it proves nothing.
    assert checked["aiida"] >= 10 and checked["plumpy"] >= 10, checked
    assert not failures, failures
