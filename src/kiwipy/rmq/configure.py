"""kiwipy 0.9 shipped ``kiwipy.rmq.configure`` as an empty module; this one exists, empty too,
so that an import of that path keeps working."""

from __future__ import annotations

__all__ = ()
