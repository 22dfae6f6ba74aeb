"""The options of the in-process transport's communicators (:class:`MemoryOptions`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, TypedDict, Union

from .. import encoders

__all__ = ("MemoryOptions", "check_options")


class MemoryOptions(TypedDict, total=False):
    """Options of :func:`async_connect`, :func:`connect` and the communicators.

    ``encoder``/``decoder``: an :class:`~kiwipy.encoders.Encoder`, a built-in encoder's name
    (``'yaml'``, ``'json'``, ``'msgpack'``) or kiwipy 0.9's pair of callables; see
    :func:`kiwipy.encoders.resolve`. Neither given: bodies are passed by reference.
    ``task_queue``: the default task queue's name. ``task_prefetch_count``: how many tasks
    of the default queue may be in progress at once (0: no limit). ``max_message_size``:
    the largest encoded message, in bytes, that may be sent (with an encoder; default 128
    MiB, as on RabbitMQ): a larger one raises :class:`~kiwipy.MessageTooLarge` from the send.

    ``message_exchange``, ``task_exchange``, ``queue_expires``, ``task_prefetch_size`` and
    ``testing_mode`` are accepted and ignored, so that options written for the RabbitMQ
    transport work here too; isolate communicators with the broker name instead.
    """

    encoder: Union[encoders.Encoder, encoders.EncodeFn, str, None]
    decoder: Optional[encoders.DecodeFn]
    task_queue: str
    task_prefetch_count: int
    max_message_size: int
    task_prefetch_size: int
    message_exchange: str
    task_exchange: str
    queue_expires: int
    testing_mode: bool


_OPTION_NAMES = frozenset(MemoryOptions.__optional_keys__)


def check_options(options: Mapping[str, Any]) -> None:
    """:raises TypeError: if *options* has a name :class:`MemoryOptions` does not."""
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise TypeError(f"unknown memory communicator options: {', '.join(sorted(unknown))}")
