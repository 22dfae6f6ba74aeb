"""What every core sends for a broadcast: kiwipy 0.9's four-key envelope, and the items of
``broadcast_send_many`` turned into ``broadcast_send``'s arguments (one check, so every
core refuses the same malformed items)."""

from __future__ import annotations

from typing import Any

__all__ = ("batch_arguments", "envelope")


def envelope(body: Any, sender: Any, subject: Any, correlation_id: Any) -> dict[str, Any]:
    """:returns: kiwipy 0.9's broadcast envelope."""
    return {"body": body, "sender": sender, "subject": subject, "correlation_id": correlation_id}


def batch_arguments(item: Any) -> tuple[Any, Any, Any, Any]:
    """:returns: ``(body, sender, subject, correlation_id)`` for an item of
    ``broadcast_send_many``, which holds the first one to four of them (the others are
    ``None``, as ``broadcast_send``'s defaults).

    :raises TypeError: unless *item* is a tuple of 1 to 4 elements.
    """
    if not isinstance(item, tuple) or not 1 <= len(item) <= 4:
        got = f"a tuple of {len(item)}" if isinstance(item, tuple) else type(item).__name__
        raise TypeError(
            "a broadcast_send_many item is a tuple (body[, sender[, subject[, correlation_id]]])"
            f", got {got}"
        )
    body, sender, subject, correlation_id = item + (None,) * (4 - len(item))
    return body, sender, subject, correlation_id
