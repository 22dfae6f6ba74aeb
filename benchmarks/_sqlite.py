"""The sqlite:// transport (``kiwipy-sqlite-*``): a fresh SQLite file per measurement.

A ``kiwipy-sqlite-*`` implementation runs the kiwipy thread or asyncio case code unchanged:
``SqliteFile`` creates a temporary directory, names a file in it and puts that file's URL
(with the implementation's ``synchronous`` level) into the environment, where
``_support.connect_thread``/``connect_async`` find it. Peer processes (worker, RPC server,
subscribers) inherit the environment, so they open the same file with the same interpreter.
At the end the variable is removed and so is the directory (the file, its WAL and the
``<db>-kiwipy/`` sidecar). The runner also removes directories of a child it had to kill
(``leftover_dirs``).

Like ``_support``, this module imports only the standard library at module level.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ._support import SQLITE_URL_ENV

# Variant -> (the kiwipy communicator variant whose case code runs, synchronous level).
VARIANTS: Dict[str, Tuple[str, str]] = {
    "sqlite-thread": ("thread", "full"),
    "sqlite-normal": ("thread", "normal"),
    "sqlite-async": ("async", "full"),
}
DIR_PREFIX = "kiwipy-bench-sqlite-"


class SqliteFile:
    """A temporary directory with the measurement's database; its URL in the environment."""

    def __init__(self, prefix: str, synchronous: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{prefix}-"))
        self.path = self.tmp / "bench.db"
        self.url = f"sqlite:///{self.path}?synchronous={synchronous}"
        self.synchronous = synchronous

    def __enter__(self) -> SqliteFile:
        os.environ[SQLITE_URL_ENV] = self.url
        return self

    def __exit__(self, *_exc: Any) -> None:
        os.environ.pop(SQLITE_URL_ENV, None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def details(self) -> Dict[str, Any]:
        return {"transport": "sqlite", "synchronous": self.synchronous, "file": str(self.path)}


def leftover_dirs(prefix: str) -> List[str]:
    """Remove the directories a measurement with this name prefix left (it was killed)."""
    found = glob.glob(os.path.join(tempfile.gettempdir(), f"{DIR_PREFIX}{prefix}-*"))
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found
