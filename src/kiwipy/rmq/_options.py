"""The options of the RabbitMQ communicators, declared once.

:class:`RmqOptions` is the single declaration of every option; ``async_connect``,
:class:`~kiwipy.rmq.RmqCommunicator`, :class:`~kiwipy.rmq.RmqThreadCommunicator` (and its
``connect``) and :func:`kiwipy.rmq.connect` all accept it as keyword arguments and forward it
unchanged, so an option added here is accepted everywhere (kiwipy 0.9 copied ten parameters
five times and lost ``queue_expires`` and ``async_task_timeout`` on the way: bug B8).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qsl, urlsplit

from typing_extensions import TypedDict
from yarl import URL

from .. import _limits, encoders
from . import defaults

__all__ = (
    "DEFAULTS",
    "QUEUE_TYPES",
    "ConnectionFactory",
    "ConnectionParams",
    "URL_PARAMETERS",
    "RmqOptions",
    "check_url_query",
    "endpoint_urls",
    "resolve_options",
)

#: ``connection_params``: a URL string (passed positionally to the factory), a list of URLs
#: (the nodes of one cluster), or a dict of keyword arguments (e.g. ``{'url': 'amqp://...'}``);
#: ``None`` means ``{}``. A URL may name several hosts: ``amqp://u:p@h1:5672,h2:5673/vhost``.
ConnectionParams = Union[str, Sequence[str], Mapping[str, Any], None]
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
    """Auto-deleting exchanges and expiring task queues, for tests. New task queues are
    then declared exactly as kiwipy 0.9 declares them in testing mode (not durable, 7-day
    message TTL, ``x-expires`` 10 s), so 0.9 peers in testing mode can share them, unless
    ``task_queue_compat=False`` (or a quorum queue, or a ``task_message_ttl``) asks for
    this library's arguments."""
    async_task_timeout: float
    """Seconds a blocking call of the thread communicator may take (5.0)."""
    task_queue_compat: Optional[bool]
    """Declare *new* task queues with kiwipy 0.9's exact arguments (7-day message TTL, no
    dead-letter queue; in testing mode also not durable, with ``x-expires``) for
    deployments mixing kiwipy 0.9 and this library: a kiwipy 0.9 *sender* cannot use a queue
    declared with this library's arguments (docs: guarantees, "Sharing task queues with
    kiwipy 0.9"). ``None`` (default): only in testing mode. Existing queues are always used
    as they are."""
    reply_queue_expires: int
    """ms the reply queue outlives its consumer (``x-expires``, 60000), e.g. across a
    reconnection."""
    max_message_size: int
    """Largest encoded message, in bytes, sent or accepted (16 MiB, RabbitMQ 4.0's default;
    kiwipy 0.9 had no limit). A message over it is refused before sending; a received one is
    refused before decoding (a task is parked, reason ``too-large``)."""
    max_decode_memory: Optional[int]
    """Most memory, in bytes, decoding one received body may take (512 MiB): a body whose size
    times its encoder's worst-case :attr:`~kiwipy.encoders.Encoder.decode_factor` is over it
    is refused before decoding with :class:`~kiwipy.DecodeBudgetExceeded` (a task is parked,
    reason ``too-large``). With the defaults, YAML bodies of up to 1.7 MiB, msgpack ones of
    up to 6.4 MiB and JSON ones up to ``max_message_size`` are decoded. ``None``: no budget
    (kiwipy 0.9)."""
    recovery_timeout: float
    """Seconds to wait for a lost connection to come back before sends raise and waiting
    replies fail with :class:`~kiwipy.ConnectionLost` (30.0). Every send ends within this
    time, confirmed or raising; an RPC identifier found taken on reconnection is tried again
    for this long before its subscriber is dropped (``subscriber-lost``)."""
    reject_backoff: float
    """Seconds a task that every local subscriber rejected is held before it is requeued
    again, when it keeps coming back to this worker (doubles up to 10 times that; 0.5)."""
    stall_timeout: Optional[float]
    """Seconds without an answer from the broker after which the connection counts as
    stalled and is reset (then restored); it is checked every half of that, so a silent link
    is noticed within 1.5 times it. ``None`` (the default): the connection's heartbeat (the
    URL's ``heartbeat``, 60 s by default); ``0``: no check."""
    reconnect_max_interval: Optional[float]
    """Longest pause, in seconds, between two reconnection attempts: the first attempt is
    immediate, then the pause starts at 0.1 s and doubles up to this (``None``: the URL's
    ``reconnect_interval``, else aio-pika's 5 s)."""
    rpc_check_interval: float
    """Seconds between two checks that the RPC subscribers replies are awaited from still
    exist; a reply from one that is gone ends with :class:`~kiwipy.ReplyLost` within about
    two intervals (5.0; 0: no check)."""
    # Long tasks (docs/long-tasks.md)
    task_lease_after: Optional[float]
    """Seconds a task may run holding its delivery; a task still running then is converted
    into a *lease* (600.0; must stay below the broker's ``consumer_timeout`` minus one channel
    tick; ``None`` or 0: never, as kiwipy 0.9)."""
    lease_interval: float
    """Seconds between two checks of a lease (the ``x-message-ttl`` of ``<queue>.leases``;
    60.0)."""
    lease_strikes: int
    """Failed checks in a row (owner unreachable or silent) after which a checker takes a
    leased task over (2)."""
    lease_check_timeout: float
    """Seconds a checker waits for the owner of a lease to answer (5.0)."""
    task_message_ttl: Optional[int]
    """ms a task may wait in a *new* task queue before it is dead-lettered to
    ``<queue>.dead`` with reason ``expired`` (``None``: forever, the default)."""
    task_queue_type: str
    """``'classic'`` or ``'quorum'``: the type of *new* task queues (and of their ``.dead``
    and ``.leases`` queues); existing queues are used as they are."""
    shuffle_endpoints: bool
    """With several endpoints (docs/cluster.md), try them in a random order, so clients
    spread over the nodes of a cluster (``True``); ``False`` keeps the given order. Used by
    the ``connect`` functions, which make the connection."""
    task_delivery_limit: Optional[int]
    """Quorum task queues only: deliveries after the first before a task is dead-lettered
    with reason ``delivery_limit`` (``x-delivery-limit``: a task is delivered at most this
    plus one times). ``None`` (the default): no limit, on RabbitMQ 3.x and 4.x alike (4.0
    would otherwise impose 20, and a crashed worker's deliveries count toward it)."""


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
    "task_queue_compat": None,
    "reply_queue_expires": defaults.REPLY_QUEUE_EXPIRES,
    "max_message_size": _limits.DEFAULT_MAX_MESSAGE_SIZE,
    "max_decode_memory": 512 * 1024 * 1024,
    "recovery_timeout": 30.0,
    "reject_backoff": 0.5,
    "stall_timeout": None,
    "reconnect_max_interval": None,
    "rpc_check_interval": 5.0,
    "task_lease_after": 600.0,
    "lease_interval": 60.0,
    "lease_strikes": 2,
    "lease_check_timeout": 5.0,
    "task_message_ttl": None,
    "task_queue_type": "classic",
    "task_delivery_limit": None,
    "shuffle_endpoints": True,
}

#: The task queue types this library can declare.
QUEUE_TYPES = ("classic", "quorum")


def resolve_options(options: Mapping[str, Any]) -> RmqOptions:
    """:returns: *options* completed with the defaults.

    :raises TypeError: for a name that is not an option (as a misspelt keyword would).
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(map(repr, unknown))}")
    resolved: RmqOptions = {**DEFAULTS, **options}  # type: ignore[typeddict-item]
    _check_task_options(resolved)
    resolved["task_queue_compat"] = _task_queue_compat(resolved)
    return resolved


def _task_queue_compat(options: RmqOptions) -> bool:
    """``task_queue_compat`` made a bool: ``None`` means kiwipy 0.9's queues in testing mode
    (where 0.9 peers declare them too), unless an option asks for what 0.9 cannot declare."""
    compat = options["task_queue_compat"]
    if compat is not None:
        return bool(compat)
    classic = options["task_queue_type"] == "classic" and options["task_message_ttl"] is None
    return bool(options["testing_mode"]) and classic


def _check_task_options(options: RmqOptions) -> None:
    """:raises ValueError: for a task queue or lease option that cannot work (checked
    here so a bad value fails when the communicator is made, not at the first long task)."""
    if options["task_queue_type"] not in QUEUE_TYPES:
        raise ValueError(f"task_queue_type must be one of {QUEUE_TYPES}")
    if options["task_queue_type"] != "classic" and options["task_queue_compat"]:
        raise ValueError("task_queue_compat declares kiwipy 0.9's classic queues only")
    if options["lease_interval"] <= 0 or options["lease_check_timeout"] <= 0:
        raise ValueError("lease_interval and lease_check_timeout must be positive")
    budget = options["max_decode_memory"]
    if budget is not None and budget <= 0:
        raise ValueError("max_decode_memory must be positive or None")
    limit = options["task_delivery_limit"]
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError("task_delivery_limit must be a whole number, 0 or more, or None")
    if options["lease_strikes"] < 1:
        raise ValueError("lease_strikes must be at least 1")
    after = options["task_lease_after"]
    if after is not None and after < 0:
        raise ValueError("task_lease_after must be positive, 0 or None")


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


# URL query parameters
#
# aiormq and aio-pika read these from the URL and quietly replace a value they cannot parse
# (``heartbeat=abc`` becomes 0: no heartbeat; ``no_verify_ssl=false`` turns verification
# *off*, since only ``0`` keeps it) and ignore a name they do not know (a misspelt
# ``hearbeat``). Checking them here turns each into an error that names it.


def _whole(low: int, high: int) -> Callable[[str], bool]:
    return lambda text: text.isdigit() and low <= int(text) <= high


def _seconds(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


_BOOLEAN_WORDS = ("1", "0", "true", "false", "yes", "no", "on", "off")

#: Every URL query parameter the RabbitMQ transport reads: name -> (check, what it must be).
URL_PARAMETERS: dict[str, tuple[Callable[[str], bool], str]] = {
    "heartbeat": (_whole(0, 65535), "a whole number of seconds from 0 (off) to 65535"),
    "timeout": (_whole(0, 2**31), "a whole number of seconds"),
    "name": (lambda text: True, "a connection name"),
    "auth": (lambda text: text.upper() in ("PLAIN", "EXTERNAL"), "plain or external"),
    "cafile": (bool, "a file name"),
    "capath": (bool, "a directory name"),
    "cadata": (bool, "certificate data"),
    "keyfile": (bool, "a file name"),
    "certfile": (bool, "a file name"),
    "no_verify_ssl": (lambda text: text in ("0", "1"), "0 (verify, the default) or 1"),
    "reconnect_interval": (_seconds, "a number of seconds, 0 or more"),
    "fail_fast": (lambda text: text.lower() in _BOOLEAN_WORDS, "true or false"),
    "interleave": (_whole(0, 2**31), "a whole number"),
    "happy_eyeballs_delay": (_seconds, "a number of seconds, 0 or more"),
}


def check_url_query(params: ConnectionParams) -> None:
    """Check the query parameters of a connection URL (``params`` itself, or its ``url``;
    each URL of a list).

    :raises ValueError: naming the first parameter that is unknown or has a value the
        transport cannot use (which aiormq would otherwise replace or ignore silently).
    """
    url = params.get("url") if isinstance(params, Mapping) else params
    if isinstance(url, str):
        _check_query(url)
    elif isinstance(url, Sequence):
        for each in url:
            if isinstance(each, str):
                _check_query(each)


def _check_query(url: str) -> None:
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        known = URL_PARAMETERS.get(name)
        if known is None:
            raise ValueError(
                f"unknown URL parameter {name!r} (known: {', '.join(sorted(URL_PARAMETERS))})"
            )
        check, expected = known
        if not check(value):
            raise ValueError(f"URL parameter {name}={value!r} is invalid: it must be {expected}")


# Several endpoints (the nodes of a cluster: docs/cluster.md)
#
# yarl (and so aio-pika and aiormq) reads ``h1:5672,h2:5673`` as one host with the port
# ``5672,h2:5673`` and fails ("port can't be converted to integer"), and takes no list. The
# endpoints are split here into one URL per host; the connection is made to one of them at a
# time (:class:`kiwipy.rmq.connection._amqp.RobustConnection`).


def endpoint_urls(params: ConnectionParams) -> list[str]:
    """:returns: one URL per endpoint that *params* names (a URL whose host part may list
    several ``host[:port]`` separated by commas, a list of such URLs, or a dict whose
    ``url`` is either), in the given order; ``[]`` if *params* names no URL (keyword
    arguments such as ``{'host': ...}``).

    :raises ValueError: for an endpoint that is not a valid URL (an empty host, a port that
        is not a number), an empty list, or endpoints that differ in anything but host and
        port: the nodes of one cluster share its users, virtual hosts and settings.
    """
    url = params.get("url") if isinstance(params, Mapping) else params
    if url is None:
        return []
    if isinstance(url, (str, URL)):
        urls = _split_hosts(str(url))
    elif isinstance(url, Sequence):
        if not url:
            raise ValueError("an empty list of URLs names no broker to connect to")
        urls = [one for each in url for one in _split_hosts(_url_text(each))]
    else:
        raise ValueError(f"a connection URL must be a string or a list of strings, not {url!r}")
    _check_shared(urls)
    return urls


def _url_text(url: object) -> str:
    if not isinstance(url, (str, URL)):
        raise ValueError(f"a connection URL must be a string, not {url!r}")
    return str(url)


def _split_hosts(url: str) -> list[str]:
    """:returns: *url* as one URL per host of its (comma-separated) host part."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return [_checked(url, url)]
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0),
              default=len(rest))  # fmt: skip
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if "," not in hosts:
        return [_checked(url, url)]
    prefix = f"{scheme}://{userinfo}{at}"
    return [_checked(f"{prefix}{host.strip()}{tail}", url) for host in hosts.split(",")]


def _checked(endpoint: str, whole: str) -> str:
    """:returns: *endpoint* once yarl can read its host and port."""
    try:
        parsed = URL(endpoint)
        port = parsed.port
    except ValueError as exc:
        raise ValueError(f"bad endpoint in {_masked(whole)!r}: {exc}") from None
    if parsed.scheme in ("amqp", "amqps") and not parsed.host:
        raise ValueError(f"bad endpoint in {_masked(whole)!r}: it names no host")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"bad endpoint in {_masked(whole)!r}: port {port} out of range")
    return endpoint


def _check_shared(urls: list[str]) -> None:
    def shared(url: str) -> tuple[Any, ...]:
        parsed = URL(url)
        return parsed.scheme, parsed.user, parsed.password, parsed.path or "/", parsed.query_string

    first = shared(urls[0])
    for url in urls[1:]:
        if shared(url) != first:
            raise ValueError(
                f"the endpoints {_masked(urls[0])!r} and {_masked(url)!r} differ in more than "
                "host and port: the nodes of one cluster share the scheme, user, password, "
                "virtual host and URL parameters"
            )


def _masked(url: str) -> str:
    userinfo, at, rest = url.partition("@")
    if not at or ":" not in userinfo.partition("://")[2]:
        return url
    return f"{userinfo.rsplit(':', 1)[0]}:***@{rest}"
