"""The text of an exception raised by user code, for the reply that reports it.

``str(exc)`` runs the exception's own ``__str__``, which may itself raise; the reply must
still be sent (or the sender would wait for ever), so the text falls back to a description.
"""

from __future__ import annotations

__all__ = ("exception_text",)


def exception_text(exc: BaseException) -> str:
    """:returns: ``str(exc)``, or a description naming its type if that raises."""
    try:
        return str(exc)
    except Exception as failure:
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        return f"<{name}: str() raised {type(failure).__name__}>"
