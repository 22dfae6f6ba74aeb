"""The options of the RabbitMQ communicators, declared once.

:class:`RmqOptions` is the single declaration of every option; ``async_connect``,
:class:`~kiwipy.rmq.RmqCommunicator`, :class:`~kiwipy.rmq.RmqThreadCommunicator` (and its
``connect``) and :func:`kiwipy.rmq.connect` all accept it as keyword arguments and forward it
unchanged, so an option added here is accepted everywhere (kiwipy 0.9 copied ten parameters
five times and lost ``queue_expires`` and ``async_task_timeout`` on the way: bug B8).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Callable, Union

from typing_extensions import TypedDict

from .. import encoders
from . import defaults

__all__ = ("DEFAULTS", "ConnectionFactory", "ConnectionParams", "RmqOptions", "resolve_options")

#: ``connection_params``: a URL string (passed positionally to the factory) or a dict of
#: keyword arguments (e.g. ``{'url': 'amqp://...'}``); ``None`` means ``{}``.
ConnectionParams = Union[str, Mapping[str, Any], None]
#: Makes an aio-pika connection, e.g. :func:`aio_pika.connect_robust` (the default).
ConnectionFactory = Callable[..., Awaitable[Any]]


class RmqOptions(TypedDict, total=False):
    """Keyword options of every RabbitMQ communicator constructor and ``connect`` function.

    kiwipy 0.9's options first (same names and defaults), then this library's additions.
    """

    message_exchange: str
    """Exchange for RPCs and broadcasts (``'kiwipy.messages'``)."""
    queue_expires: int
    """ms an unused RPC or broadcast queue lives on (``x-expires``; 60000; falsy: none)."""
    task_exchange: str
    """Exchange for tasks (``'kiwipy.tasks'``)."""
    task_queue: str
    """The default task queue (``'kiwipy.tasks'``)."""
    task_prefetch_size: int
    """Per-consumer prefetch size of the default task queue (0: unlimited)."""
    task_prefetch_count: int
    """Per-consumer prefetch count of the default task queue (0: unlimited)."""
    encoder: Any
    """An :class:`~kiwipy.encoders.Encoder`, an encoder name, or a kiwipy 0.9 ``encoder(obj)
    -> bytes`` callable (``None``: YAML, byte-compatible with kiwipy 0.9)."""
    decoder: Any
    """With a callable ``encoder``, its ``decoder(bytes) -> obj``."""
    testing_mode: bool
    """Auto-deleting exchanges and expiring task queues, for tests."""
    async_task_timeout: float
    """Seconds a blocking call of the thread communicator may take (5.0)."""
    task_queue_compat: bool
    """Declare *new* task queues with kiwipy 0.9's exact arguments (7-day message TTL, no
    dead-letter queue) for deployments mixing kiwipy 0.9 and this library. Existing queues
    are always used as they are."""
    reply_queue_expires: int
    """ms the reply queue outlives its consumer (``x-expires``, 60000), e.g. across a
    reconnection."""
    max_message_size: int
    """Largest encoded message, in bytes, sent or accepted (128 MiB, RabbitMQ's default)."""
    recovery_timeout: float
    """Seconds to wait for a lost connection to come back before sends raise and waiting
    replies fail with :class:`~kiwipy.ConnectionLost` (30.0)."""
    reject_backoff: float
    """Seconds a task that every local subscriber rejected is held before it is requeued
    again, when it keeps coming back to this worker (doubles up to 10 times that; 0.5)."""


DEFAULTS: RmqOptions = {
    "message_exchange": defaults.MESSAGE_EXCHANGE,
    "queue_expires": defaults.QUEUE_EXPIRES,
    "task_exchange": defaults.TASK_EXCHANGE,
    "task_queue": defaults.TASK_QUEUE,
    "task_prefetch_size": defaults.TASK_PREFETCH_SIZE,
    "task_prefetch_count": defaults.TASK_PREFETCH_COUNT,
    "encoder": None,
    "decoder": None,
    "testing_mode": False,
    "async_task_timeout": 5.0,
    "task_queue_compat": False,
    "reply_queue_expires": defaults.REPLY_QUEUE_EXPIRES,
    "max_message_size": 128 * 1024 * 1024,
    "recovery_timeout": 30.0,
    "reject_backoff": 0.5,
}


def resolve_options(options: Mapping[str, Any]) -> RmqOptions:
    """:returns: *options* completed with the defaults.

    :raises TypeError: for a name that is not an option (as a misspelt keyword would).
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(map(repr, unknown))}")
    resolved: RmqOptions = {**DEFAULTS, **options}  # type: ignore[typeddict-item]
    return resolved


def resolve_encoder(options: RmqOptions) -> encoders.Encoder:
    """:returns: the :class:`~kiwipy.encoders.Encoder` the options ask for.

    kiwipy 0.9's own default callables (:data:`~kiwipy.rmq.defaults.ENCODER`/``DECODER``)
    map to :data:`kiwipy.encoders.YAML`, which writes the same bytes.
    """
    encoder, decoder = options["encoder"], options["decoder"]
    if encoder is defaults.ENCODER:
        encoder = None
    if decoder is defaults.DECODER:
        decoder = None
    return encoders.resolve(encoder, decoder)
