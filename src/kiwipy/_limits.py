"""The limits every transport shares: which RPC identifiers and task queue names are valid,
and how large a message may be. Pure functions, no I/O.

RabbitMQ carries names in AMQP *short strings*: at most 255 bytes of UTF-8 (bytes, not
characters: ``'é' * 200`` is 400 bytes). A name that does not fit cannot be sent at all,
and a name that is an AMQP topic wildcard would be routed to the wrong subscriber. The rules
are written once, here, and every transport applies them before it registers or sends
anything, so:

* every transport accepts and refuses exactly the same names (the in-process transport
  could carry any name, but a program tested on it must not fail on RabbitMQ);
* a refused name raises :class:`~kiwipy.InvalidName` from the call that was given it and
  leaves the communicator untouched.

The rules (``docs/guarantees.md`` states them for users):

* **RPC identifier** (``add_rpc_subscriber``, ``rpc_send``, ``rpc_send_many``): any object;
  its ``str()`` is the identifier on the wire (kiwipy 0.9's routing key
  ``[rpc].<identifier>``). That string is not empty, is valid UTF-8 (no lone surrogates),
  is at most :data:`MAX_IDENTIFIER_BYTES` bytes (so the routing key fits in 255), and none
  of its dot-separated words is ``#`` or ``*`` (AMQP topic wildcards: an identifier ``#``
  would receive the calls made to every other identifier).
* **Task queue name** (``task_queue(name)`` and the ``task_queue`` option): a non-empty
  ``str`` of ASCII letters, digits and ``-_.:@#,/`` and spaces (what AMQP clients accept
  in a queue name: pamqp refuses anything else before it reaches the broker), at most
  :data:`MAX_QUEUE_BYTES` bytes (the queue's companions ``<name>.dead`` and
  ``<name>.leases`` must fit in 255 too), no dot-separated word ``#`` (the name is also
  the routing key of its tasks on a topic exchange: a queue ``#`` would take every message
  sent there), not starting with ``amq.`` (reserved by AMQP brokers).
* **Exchange name** (the ``message_exchange`` and ``task_exchange`` options): a non-empty
  ``str`` of the same characters as a queue name, at most :data:`MAX_EXCHANGE_BYTES` bytes
  (the reply queue ``<exchange>-reply-<uuid4>`` must fit in 255), not starting with
  ``amq.``. The in-process transport ignores these options but checks them all the same.
* **Any other short string** a transport puts on the wire (exchange names, routing keys,
  message properties): a ``str`` of valid UTF-8, at most :data:`MAX_SHORT_STRING` bytes
  (:func:`check_short_string`).
* **Message size**: an encoded message (task, RPC request, broadcast, reply) over the
  communicator's ``max_message_size`` raises :class:`~kiwipy.MessageTooLarge` before it is
  sent (:func:`check_size`), on every send path.
"""

from __future__ import annotations

import re
from typing import Any

from .exceptions import InvalidName, MessageTooLarge

__all__ = (
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_EXCHANGE_BYTES",
    "MAX_IDENTIFIER_BYTES",
    "MAX_QUEUE_BYTES",
    "MAX_SHORT_STRING",
    "QUEUE_NAME_CHARACTERS",
    "RESERVED_QUEUE_PREFIX",
    "RPC_TOPIC",
    "WILDCARDS",
    "check_options",
    "check_short_string",
    "check_size",
    "exchange_name",
    "is_amqp_queue_name",
    "rpc_identifier",
    "task_queue_name",
)

#: The default ``max_message_size`` of every transport (16 MiB, RabbitMQ 4's own default:
#: it bounds a worker's memory, see ``docs/security.md``).
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: The longest AMQP short string, in bytes of UTF-8.
MAX_SHORT_STRING = 255
#: kiwipy 0.9's routing key of RPCs is ``[rpc].<identifier>``.
RPC_TOPIC = "[rpc]"
#: The longest RPC identifier, in bytes of UTF-8: its routing key must be a short string.
MAX_IDENTIFIER_BYTES = MAX_SHORT_STRING - len(RPC_TOPIC) - 1
#: The longest suffix added to a task queue's name (``<name>.leases``; ``<name>.dead``).
_QUEUE_SUFFIX = ".leases"
#: The longest task queue name, in bytes of UTF-8.
MAX_QUEUE_BYTES = MAX_SHORT_STRING - len(_QUEUE_SUFFIX)
#: The reply queue of a communicator is ``<message exchange>-reply-<uuid4>``.
_REPLY_SUFFIX = "-reply-00000000-0000-0000-0000-000000000000"
#: The longest exchange name, in bytes.
MAX_EXCHANGE_BYTES = MAX_SHORT_STRING - len(_REPLY_SUFFIX)
#: The characters of a queue name (pamqp's ``queue-name`` domain).
QUEUE_NAME_CHARACTERS = "a-z A-Z 0-9 - _ . : @ # , / and space"
_QUEUE_NAME = re.compile(r"[a-zA-Z0-9\-_.:@#,/ ]*\Z").match
#: Queue names AMQP brokers keep for themselves.
RESERVED_QUEUE_PREFIX = "amq."
#: The words of a topic routing key that match other words.
WILDCARDS = frozenset({"#", "*"})


def _utf8(value: str, field: str, limit: int, what: str = "") -> bytes:
    """:returns: *value* in UTF-8. :raises InvalidName: if it cannot be, or is too long."""
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidName(field, value, f"not valid UTF-8 ({exc.reason})") from None
    if len(data) > limit:
        why = f"{what} must fit in" if what else "it must be"
        raise InvalidName(
            field,
            value,
            f"{len(data)} bytes of UTF-8, over the limit of {limit} bytes "
            f"({why} an AMQP short string of {MAX_SHORT_STRING} bytes)",
        )
    return data


def check_short_string(value: Any, field: str) -> str:
    """:returns: *value*, an AMQP short string.

    :param field: what the value is for, named in the error.
    :raises InvalidName: unless *value* is a ``str`` of at most 255 bytes of UTF-8.
    """
    if not isinstance(value, str):
        raise InvalidName(field, value, f"a str is needed, not {type(value).__name__}")
    _utf8(value, field, MAX_SHORT_STRING)
    return value


def rpc_identifier(identifier: Any) -> str:
    """:returns: the RPC identifier *identifier* as it goes on the wire (its ``str``).

    :raises InvalidName: if it breaks the rules in the module doc.
    """
    field = "RPC identifier"
    try:
        text = str(identifier)
    except Exception as exc:  # a user type whose __str__ fails
        raise InvalidName(field, object.__repr__(identifier), f"str() failed: {exc!r}") from None
    if not isinstance(text, str) or not text:
        raise InvalidName(field, identifier, "its str() is empty")
    _utf8(text, field, MAX_IDENTIFIER_BYTES, f"its routing key '{RPC_TOPIC}.<identifier>'")
    if not WILDCARDS.isdisjoint(text.split(".")):
        raise InvalidName(
            field, identifier, "a dot-separated word of it is '#' or '*' (AMQP wildcards)"
        )
    return text


def task_queue_name(name: Any) -> str:
    """:returns: *name*, a valid task queue name.

    :raises InvalidName: if it breaks the rules in the module doc.
    """
    field = "task queue name"
    if not isinstance(name, str):
        raise InvalidName(field, name, f"a str is needed, not {type(name).__name__}")
    if not name:
        raise InvalidName(field, name, "it is empty")
    if not is_amqp_queue_name(name):
        raise InvalidName(field, name, f"only {QUEUE_NAME_CHARACTERS} are allowed")
    _utf8(name, field, MAX_QUEUE_BYTES, "its queue '<name>.leases'")
    if not WILDCARDS.isdisjoint(name.split(".")):
        raise InvalidName(field, name, "a dot-separated word of it is '#' (an AMQP wildcard)")
    if name.startswith(RESERVED_QUEUE_PREFIX):
        raise InvalidName(
            field, name, f"names starting with {RESERVED_QUEUE_PREFIX!r} are reserved"
        )
    return name


def exchange_name(name: Any, field: str = "exchange name") -> str:
    """:returns: *name*, a valid exchange name (the ``message_exchange`` and
    ``task_exchange`` options).

    :param field: the option, named in the error.
    :raises InvalidName: if it breaks the rules in the module doc.
    """
    if not isinstance(name, str):
        raise InvalidName(field, name, f"a str is needed, not {type(name).__name__}")
    if not name:
        raise InvalidName(field, name, "it is empty")
    if not is_amqp_queue_name(name):
        raise InvalidName(field, name, f"only {QUEUE_NAME_CHARACTERS} are allowed")
    _utf8(name, field, MAX_EXCHANGE_BYTES, "the reply queue '<exchange>-reply-<uuid4>'")
    if name.startswith(RESERVED_QUEUE_PREFIX):
        raise InvalidName(
            field, name, f"names starting with {RESERVED_QUEUE_PREFIX!r} are reserved"
        )
    return name


def check_options(options: Any) -> None:
    """Check the names among a communicator's *options* (a mapping): ``task_queue``,
    ``message_exchange`` and ``task_exchange``, when given.

    :raises InvalidName: for the first that breaks the rules in the module doc.
    """
    if options.get("task_queue") is not None:
        task_queue_name(options["task_queue"])
    for option in ("message_exchange", "task_exchange"):
        if options.get(option) is not None:
            exchange_name(options[option], f"{option} option")


def is_amqp_queue_name(name: str) -> bool:
    """:returns: whether *name* has only the characters AMQP clients accept in a queue
    name (length aside)."""
    return _QUEUE_NAME(name) is not None


def check_size(body: bytes, limit: int) -> bytes:
    """:returns: *body*, an encoded message.

    :raises MessageTooLarge: if it is over *limit* bytes.
    """
    if len(body) > limit:
        raise MessageTooLarge(len(body), limit)
    return body
