"""Prints, as JSON, every name a kiwipy installation exposes from each of its public modules.

Run with the Python of the kiwipy 0.9 venv (``scripts/kiwipy09-venv``) for the names to keep,
and with this library's for the names it has. Each module is imported alone in a fresh
interpreter, so that a submodule counts as exposed only if importing its parent binds it (as
``import kiwipy`` binds ``kiwipy.communications``, but not ``kiwipy.rmq``). A public module is
every module of the package whose path has no part starting with ``_``. Its exposed names are
the public entries of its namespace, including what its star imports made visible (kiwipy
0.9's ``communications`` did ``from .exceptions import *``), except what is plainly the
implementation's own plumbing:

* a module object that is not one of kiwipy's (``asyncio``, ``aio_pika``, ...), or a kiwipy
  module bound inside *another* module (``kiwipy.rmq.tasks.messages``): only a package's own
  submodules (``kiwipy.rmq.tasks`` as ``kiwipy.rmq``'s attribute) are part of its surface;
* a helper imported under its own name from ``typing``, ``functools``, ``collections`` or
  ``contextlib`` (``Optional``, ``partial``, ``deque``, ``contextmanager``).

Each name is tagged ``"module"`` (a submodule), ``"top"`` (the very object ``kiwipy`` exports
under the same name, which must stay the same object) or ``"obj"``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import kiwipy

HELPERS = {"typing", "functools", "collections", "contextlib"}


def public_modules() -> list[str]:
    packages = [kiwipy, importlib.import_module("kiwipy.rmq")]
    found = {package.__name__ for package in packages}
    for package in packages:
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            found.add(info.name)
    return sorted(m for m in found if not any(p.startswith("_") for p in m.split(".")))


def exposed(module: types.ModuleType, top: dict[str, object]) -> dict[str, str]:
    names = {}
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(value, types.ModuleType):
            if value.__name__ == f"{module.__name__}.{name}":
                names[name] = "module"
            continue
        origin = (getattr(value, "__module__", None) or "").split(".")[0]
        if origin in HELPERS and getattr(value, "__name__", None) == name:
            continue
        names[name] = "top" if top.get(name) is value else "obj"
    return names


def one_module(name: str) -> dict[str, str]:
    """What *name* exposes when it is the only module imported (besides ``kiwipy`` itself)."""
    code = (
        "import importlib, json, sys, kiwipy; sys.path.insert(0, sys.argv[2]);"
        "from list_names import exposed;"
        "print(json.dumps(exposed(importlib.import_module(sys.argv[1]), dict(vars(kiwipy)))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, name, str(Path(__file__).parent)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    print(json.dumps({name: one_module(name) for name in public_modules()}))


if __name__ == "__main__":
    main()
