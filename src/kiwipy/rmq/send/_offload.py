"""Encoding large messages off the event loop (issue 6).

Encoding a 3 MB task takes milliseconds with msgpack but tens of milliseconds with the YAML
default (hundreds without libyaml): on the loop, that long without heartbeats, replies or
confirms. :func:`encode` encodes on the loop's default executor when :func:`is_large` says
the message is large, and in place otherwise (a thread hop costs more than encoding a small
message). The size is not known before encoding, so :func:`is_large` estimates it from the
strings and bytes in the message, walking at most :data:`MAX_NODES` objects: it stops as
soon as it has seen :data:`LARGE` bytes of them (the same threshold as decoding, in
:mod:`kiwipy.rmq.receive._replies`), and calls a message with more objects than that large too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ... import exceptions
from ..connection._session import Session

__all__ = ("LARGE", "MAX_NODES", "encode", "is_large", "refuse_oversized")

#: Estimated bytes above which a message is encoded off the loop.
LARGE = 64 * 1024
#: Objects :func:`is_large` looks at before calling a message large anyway.
MAX_NODES = 2000

_TEXT = (str, bytes, bytearray)


def is_large(obj: Any) -> bool:
    """:returns: whether *obj* holds at least :data:`LARGE` bytes of strings (or more than
    :data:`MAX_NODES` objects)."""
    seen, size, stack = 0, 0, [obj]
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            return True
        if isinstance(item, _TEXT):
            size += len(item)
            if size >= LARGE:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return False


def refuse_oversized(session: Session, obj: Any) -> None:
    """:raises MessageTooLarge: at once, before encoding, if the strings and bytes in *obj*
    alone are over ``max_message_size`` (encoding 200 MB of YAML would take seconds first)."""
    least = session.encoder.min_size(obj)
    if least > session.max_message_size:
        raise exceptions.MessageTooLarge(least, session.max_message_size, at_least=True)


async def encode(session: Session, obj: Any) -> bytes:
    """:returns: ``session.encoder.encode(obj)``, computed on the default executor when
    *obj* is large.

    :raises MessageTooLarge: at once if *obj* cannot fit (:func:`refuse_oversized`).
    """
    refuse_oversized(session, obj)
    if is_large(obj):
        return await asyncio.get_running_loop().run_in_executor(None, session.encoder.encode, obj)
    return session.encoder.encode(obj)
