"""The options of the SQLite transport's communicators (:class:`SqliteOptions`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, TypedDict, Union

from .. import encoders

__all__ = ("DEFAULTS", "SYNCHRONOUS", "SqliteOptions", "resolve_options")

#: The ``synchronous`` levels a task commit may use.
SYNCHRONOUS = ("full", "normal")


class SqliteOptions(TypedDict, total=False):
    """Options of :func:`~kiwipy.sqlite.async_connect`, :func:`~kiwipy.sqlite.connect` and
    the communicators; the URL's query parameters set the same names
    (``sqlite:///tasks.db?synchronous=normal``).

    ``encoder``/``decoder``: as on RabbitMQ (default YAML). ``task_queue``: the default task
    queue's name. ``task_prefetch_count``: how many tasks of the default queue may be in
    progress here at once (0: no limit). ``max_message_size``: the largest encoded message,
    in bytes.

    ``synchronous``: ``'full'`` (the default): a task send returns once the task is on the
    disk, so it survives a power cut; ``'normal'``: it survives the crash of any process, not
    a power cut, and sends are several times quicker. ``busy_timeout``: seconds a write
    waits for the file's write lock before :class:`~kiwipy.StorageError` (default 10).
    ``task_delivery_limit``: a task delivered more than this plus one times (its workers
    died with it) goes to the dead letters with reason ``delivery_limit``; ``None`` (the
    default): no limit. ``task_message_ttl``: milliseconds a task sent by this communicator
    may wait in its queue; one not started by then goes to the dead letters with reason
    ``expired`` (``None``, the default: forever; as on RabbitMQ).

    ``message_exchange``, ``task_exchange``, ``queue_expires``, ``task_prefetch_size`` and
    ``testing_mode`` are accepted and ignored, so that options written for the RabbitMQ
    transport work here too.
    """

    encoder: Union[encoders.Encoder, encoders.EncodeFn, str, None]
    decoder: Optional[encoders.DecodeFn]
    task_queue: str
    task_prefetch_count: int
    max_message_size: int
    synchronous: str
    busy_timeout: float
    task_delivery_limit: Optional[int]
    task_message_ttl: Optional[int]
    task_prefetch_size: int
    message_exchange: str
    task_exchange: str
    queue_expires: int
    testing_mode: bool


DEFAULTS: SqliteOptions = {
    "synchronous": "full",
    "busy_timeout": 10.0,
    "task_delivery_limit": None,
    "task_message_ttl": None,
}

_NAMES = frozenset(SqliteOptions.__optional_keys__)
_QUERY = {"synchronous": str, "busy_timeout": float, "task_delivery_limit": int, "task_message_ttl": int,
          "task_prefetch_count": int, "task_queue": str, "encoder": str,
          "max_message_size": int}  # fmt: skip


def resolve_options(options: Mapping[str, Any], query: Mapping[str, str]) -> SqliteOptions:
    """:returns: *options* over the URL's *query* parameters over the defaults.

    :raises TypeError: for a name that is not an option.
    :raises ValueError: for a value that cannot work.
    """
    unknown = sorted(set(options) - _NAMES)
    if unknown:
        raise TypeError(f"unknown sqlite communicator options: {', '.join(unknown)}")
    from_query: dict[str, Any] = {}
    for name, text in query.items():
        kind = _QUERY.get(name)
        if kind is None:
            raise ValueError(
                f"unknown URL parameter {name!r}: sqlite:// URLs take {', '.join(sorted(_QUERY))}"
            )
        try:
            from_query[name] = kind(text)
        except ValueError:
            raise ValueError(f"URL parameter {name}={text!r} is not a {kind.__name__}") from None
    resolved: SqliteOptions = {**DEFAULTS, **from_query, **options}  # type: ignore[typeddict-item]
    if resolved["synchronous"] not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS}")
    if resolved["busy_timeout"] <= 0:
        raise ValueError("busy_timeout must be positive")
    limit = resolved["task_delivery_limit"]
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError("task_delivery_limit must be a whole number, 0 or more, or None")
    ttl = resolved["task_message_ttl"]
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
        raise ValueError("task_message_ttl must be a positive number of milliseconds, or None")
    return resolved
