"""kiwipy 0.9's ``kiwipy.communicate`` module: :func:`connect` and its default URI.

Kept so that code importing from this path runs unchanged; the implementation lives in
:mod:`kiwipy.communications`.
"""

from __future__ import annotations

from .communications import DEFAULT_COMM_URI, connect

__all__ = ("DEFAULT_COMM_URI", "connect")
