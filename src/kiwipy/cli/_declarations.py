"""For ``kiwipy inspect``: which declaration an existing task queue has, and whether kiwipy
0.9 peers can declare it.

AMQP cannot read a queue's arguments (only the management plugin can), but declaring an
existing queue with exactly its own properties succeeds and changes nothing, and any
difference fails with ``PRECONDITION_FAILED`` and changes nothing either (it only closes the
channel). So the declarations kiwipy makes are tried in turn, each on a channel of its own,
and the one that succeeds is the queue's. Rules:

* Only a queue that a passive declare just found is probed: an active declare of a missing
  queue would create it.
* kiwipy 0.9's declarations come first: whether a 0.9 peer can declare the queue is the
  question; a 0.9 *sender* redeclares the task queue and fails on any difference.
* A successful redeclaration counts as a use of the queue, so it restarts an ``x-expires``
  countdown; nothing else about the queue changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

from ..rmq import defaults
from ..rmq._options import resolve_options
from ..rmq.receive._topology import KIWIPY09_TASK_QUEUE, task_queue_arguments, task_queue_durable

__all__ = ("Declaration", "identify", "known_declarations")


class Declaration(NamedTuple):
    """One way kiwipy declares a task queue."""

    label: str
    durable: bool
    arguments: Mapping[str, Any]
    #: which kiwipy 0.9 peers declare exactly this: ``"production"``, ``"testing mode"``
    #: or ``None`` (none: this library's arguments)
    kiwipy09: Optional[str]


#: Options of this library's own declarations worth probing (a custom ``task_message_ttl``
#: or delivery limit cannot be guessed: such a queue shows as "not a kiwipy declaration").
_OURS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("this library", {}),
    ("this library, testing mode", {"testing_mode": True, "task_queue_compat": False}),
    ("this library, quorum", {"task_queue_type": "quorum"}),
    ("this library, quorum, testing mode", {"task_queue_type": "quorum", "testing_mode": True}),
)


def known_declarations(queue: str) -> list[Declaration]:
    """:returns: kiwipy 0.9's declarations of the task queue *queue*, then this library's."""
    testing = {**KIWIPY09_TASK_QUEUE, "x-expires": defaults.TEST_QUEUE_EXPIRES}
    found = [
        Declaration("kiwipy 0.9", True, KIWIPY09_TASK_QUEUE, "production"),
        Declaration("kiwipy 0.9, testing mode", False, testing, "testing mode"),
    ]
    for label, options in _OURS:
        resolved = resolve_options(options)
        arguments = task_queue_arguments(queue, resolved)
        found.append(Declaration(label, task_queue_durable(resolved), arguments, None))
    return found


async def identify(connection: Any, queue: str) -> dict[str, Any]:
    """Probe the existing task queue *queue* over the aio-pika *connection* (module doc).

    :returns: ``declared_as`` (a :class:`Declaration` label, or ``None`` when none fits),
        ``durable`` and ``arguments`` (``None`` when unknown), ``kiwipy09`` (which 0.9
        peers can declare it: ``"production"``, ``"testing mode"`` or ``None``) and
        ``kiwipy09_refusal`` (what the broker answers a kiwipy 0.9 declaration outside testing
        mode, when it refuses it).
    """
    refusal: Optional[str] = None
    for declaration in known_declarations(queue):
        error = await _redeclare(connection, queue, declaration)
        if error is None:
            return {
                "declared_as": declaration.label,
                "durable": declaration.durable,
                "arguments": dict(declaration.arguments),
                "kiwipy09": declaration.kiwipy09,
                "kiwipy09_refusal": refusal,
            }
        if declaration.kiwipy09 == "production":
            refusal = error
    return {
        "declared_as": None,
        "durable": None,
        "arguments": None,
        "kiwipy09": None,
        "kiwipy09_refusal": refusal,
    }


async def _redeclare(connection: Any, queue: str, declaration: Declaration) -> Optional[str]:
    """:returns: ``None`` if *queue* has exactly this *declaration*, else the broker's
    refusal."""
    import aiormq

    channel = await connection.channel()
    try:
        await channel.declare_queue(
            queue, durable=declaration.durable, arguments=dict(declaration.arguments)
        )
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        return _refusal_text(exc)
    finally:
        if not channel.is_closed:
            await channel.close()
    return None


def _refusal_text(exc: BaseException) -> str:
    """The broker's reply text (``PRECONDITION_FAILED - inequivalent arg ...``)."""
    for arg in exc.args:
        text = getattr(arg, "reply_text", None) or (arg if isinstance(arg, str) else None)
        if text:
            return str(text)
    return str(exc)
