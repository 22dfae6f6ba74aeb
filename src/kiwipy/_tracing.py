"""OpenTelemetry traces and metrics for every message kiwipy sends and handles.

This is the only module that imports OpenTelemetry, and it decides once, at import time:
with ``opentelemetry-api`` importable (the ``kiwipy[otel]`` extra) :data:`ENABLED` is true
and the functions below create spans through the *global* tracer and meter providers (no-ops
until an SDK is configured); without it every function returns at once after one check of
:data:`ENABLED`, allocating nothing, and nothing of OpenTelemetry is ever imported.

What the transports call (one place per kind of event, see ``docs/observability.md``):

* :func:`produce` where a message is built for sending: a PRODUCER span (``send <dest>``),
  ended at once, whose W3C trace context (``traceparent``, ``tracestate``) is returned as
  message headers;
* :func:`process` around the coroutine that hands one received message to the subscribers:
  a CONSUMER span (``process <dest>``), child of the producer's span, current while the
  subscribers run (user code's own spans nest under it);
* :func:`carry` around a call that runs on another thread (the thread facade's workers), so
  that span is current there too;
* :func:`failed`, :func:`rejected`, :func:`dead_lettered` where the outcome is known: the
  consumer span gets ERROR status (with the exception recorded) or an event;
* :func:`connection_event` for reconnections and the time they took;
* :func:`count_replies` registers a table of waiting replies for the ``replies.waiting`` gauge.

Attributes follow the OpenTelemetry messaging semantic conventions (``messaging.*``); what
those do not cover is named ``kiwipy.*``.
"""

from __future__ import annotations

import contextvars
import functools
import time
import weakref
from collections.abc import Awaitable, Mapping
from typing import Any, Callable, Optional, TypeVar

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
except ImportError:  # the kiwipy[otel] extra is not installed: everything is a no-op
    ENABLED = False
else:
    ENABLED = True

from ._raised import exception_text

__all__ = (
    "ENABLED",
    "MEMORY",
    "RABBITMQ",
    "SQLITE",
    "carry",
    "connection_event",
    "count_replies",
    "dead_lettered",
    "failed",
    "process",
    "produce",
    "rejected",
)

T = TypeVar("T")

#: ``messaging.system`` of the transports.
RABBITMQ = "rabbitmq"
MEMORY = "kiwipy.memory"
SQLITE = "kiwipy.sqlite"

_SCOPE = "kiwipy"


class _Handling:
    """The consumer span of the message being handled, and the type of the error its
    subscribers ended with (for the metrics' ``error.type``)."""

    __slots__ = ("error", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.error: Optional[str] = None


#: The message being handled in this context (our span, not the user's).
_HANDLING: contextvars.ContextVar[Optional[_Handling]] = contextvars.ContextVar(
    "kiwipy_handling", default=None
)


def produce(
    system: str,
    kind: str,
    destination: str,
    correlation_id: Optional[str],
    body: Any,
    message_id: Optional[str] = None,
) -> Optional[dict[str, str]]:
    """A message is built for sending: record its PRODUCER span.

    :param kind: ``task``, ``rpc`` or ``broadcast``.
    :param body: the encoded body (its size is recorded when it is ``bytes``).
    :returns: the trace context headers to put on the message (``None`` when disabled).
    """
    if not ENABLED:
        return None
    attributes = _attributes(system, "send", kind, destination, correlation_id, body, message_id)
    span = _tracer().start_span(
        f"send {destination}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    )
    headers: dict[str, str] = {}
    propagate.inject(headers, context=trace.set_span_in_context(span))
    span.end()
    _instruments().sent.add(1, _metric_attributes(attributes))
    return headers


def process(
    handling: Awaitable[T],
    system: str,
    kind: str,
    destination: str,
    headers: Optional[Mapping[str, Any]],
    correlation_id: Optional[str],
    body: Any,
    message_id: Optional[str] = None,
    redelivered: bool = False,
) -> Awaitable[T]:
    """:returns: *handling* (the coroutine handing a received message to its subscribers),
    run inside a CONSUMER span whose parent is the context in *headers* (*handling* itself
    when disabled)."""
    if not ENABLED:
        return handling
    attributes = _attributes(system, "process", kind, destination, correlation_id, body, message_id)
    return _processing(handling, attributes, headers or {}, redelivered)


async def _processing(
    handling: Awaitable[T],
    attributes: dict[str, Any],
    headers: Mapping[str, Any],
    redelivered: bool,
) -> T:
    parent = propagate.extract(_text_headers(headers))
    name = f"process {attributes['messaging.destination.name']}"
    started = time.perf_counter()
    with _tracer().start_as_current_span(
        name, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ) as span:
        handled = _Handling(span)
        token = _HANDLING.set(handled)
        if redelivered:
            span.add_event("kiwipy.redelivery")
            _instruments().redeliveries.add(1, _metric_attributes(attributes))
        try:
            return await handling
        except BaseException as exc:
            handled.error = type(exc).__qualname__
            raise
        finally:
            _HANDLING.reset(token)
            metric = _metric_attributes(attributes)
            if handled.error is not None:
                metric = {**metric, "error.type": handled.error}
            _instruments().consumed.add(1, metric)
            _instruments().duration.record(time.perf_counter() - started, metric)


def carry(call: Callable[[], T]) -> Callable[[], T]:
    """:returns: *call*, made to run in the current OpenTelemetry context on whichever
    thread calls it (*call* itself when disabled)."""
    if not ENABLED:
        return call
    return functools.partial(_in_context, otel_context.get_current(), _HANDLING.get(), call)


def _in_context(ctx: Any, handling: Optional[_Handling], call: Callable[[], T]) -> T:
    token = otel_context.attach(ctx)
    mark = _HANDLING.set(handling)
    try:
        return call()
    finally:
        _HANDLING.reset(mark)
        otel_context.detach(token)


def failed(error: BaseException) -> None:
    """The subscribers of the message being handled here ended with *error*: the consumer
    span gets ERROR status and records it."""
    if not ENABLED:
        return
    handled = _HANDLING.get()
    if handled is not None:
        handled.error = type(error).__qualname__
        text = exception_text(error)  # an exception's str() may itself raise
        status = trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {text}")
        handled.span.set_status(status)
        try:
            handled.span.record_exception(error)
        except Exception:  # the SDK reads str(error): tracing must never break a reply
            handled.span.add_event("exception", {"exception.type": handled.error})


def rejected(error: Optional[BaseException] = None) -> None:
    """Every subscriber here rejected the message being handled (``TaskRejected``)."""
    if not ENABLED:
        return
    handled = _HANDLING.get()
    if handled is not None:
        handled.span.add_event("kiwipy.rejected", {"kiwipy.reason": str(error or "")})


def dead_lettered(system: str, queue: str, reason: str) -> None:
    """A message of *queue* was dead-lettered (parked): an event on the consumer span (if it
    is being handled here) and the ``kiwipy.dead_lettered`` counter."""
    if not ENABLED:
        return
    handled = _HANDLING.get()
    if handled is not None:
        handled.span.add_event("kiwipy.dead_lettered", {"kiwipy.reason": reason})
    _instruments().dead_lettered.add(
        1, {"messaging.system": system, "messaging.destination.name": queue}
    )


def connection_event(name: str, down_since: Optional[float]) -> Optional[float]:
    """A connection event of :mod:`kiwipy.rmq.connection._events` happened.

    :param down_since: what this returned for the previous event of the connection.
    :returns: when the connection went down (``time.monotonic()``), while it is down.
    """
    if not ENABLED:
        return None
    if name in ("disconnected", "stalled"):
        return down_since if down_since is not None else time.monotonic()
    if name == "reconnected":
        _instruments().reconnections.add(1, {"messaging.system": RABBITMQ})
        if down_since is not None:
            recovered = time.monotonic() - down_since
            _instruments().recovery.record(recovered, {"messaging.system": RABBITMQ})
        return None
    return None if name in ("connected", "closed") else down_since


_REPLY_TABLES: weakref.WeakKeyDictionary[Any, tuple[str, Callable[[Any], int]]]
_REPLY_TABLES = weakref.WeakKeyDictionary()


def count_replies(owner: Any, system: str, size: Callable[[Any], int]) -> None:
    """Count ``size(owner)`` replies as waiting (the ``kiwipy.replies.waiting`` gauge), for
    as long as *owner* lives."""
    if not ENABLED:
        return
    _instruments()  # the gauge's callback reads the tables
    _REPLY_TABLES[owner] = (system, size)


# Internals (only called when ENABLED)


def _attributes(
    system: str,
    operation: str,
    kind: str,
    destination: str,
    correlation_id: Optional[str],
    body: Any,
    message_id: Optional[str],
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": system,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": destination,
        "kiwipy.message.kind": kind,
    }
    if correlation_id:
        attributes["messaging.message.conversation_id"] = str(correlation_id)
    if message_id:
        attributes["messaging.message.id"] = str(message_id)
    if isinstance(body, (bytes, bytearray, memoryview)):
        attributes["messaging.message.body.size"] = len(body)
    return attributes


_METRIC_KEYS = (
    "messaging.system",
    "messaging.operation.type",
    "messaging.operation.name",
    "messaging.destination.name",
    "kiwipy.message.kind",
)


#: The destination metrics give every RPC: identifiers are often one per process or job
#: (AiiDA's are), and each would be a time series of its own (spans keep the identifier).
RPC_DESTINATION = "[rpc]"


def _metric_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """:returns: the attributes of *attributes* that metrics carry (ids and sizes would give
    every message a time series of its own, and so would RPC identifiers: an RPC's
    destination is :data:`RPC_DESTINATION`); a shared dict: copy it to change it."""
    values = [attributes.get(key) for key in _METRIC_KEYS]
    if attributes.get("kiwipy.message.kind") == "rpc":
        values[_METRIC_KEYS.index("messaging.destination.name")] = RPC_DESTINATION
    return _metric_set(*values)


@functools.lru_cache(maxsize=1024)
def _metric_set(*values: Any) -> dict[str, Any]:
    return {key: value for key, value in zip(_METRIC_KEYS, values) if value is not None}


def _text_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """AMQP header values may arrive as ``bytes``; the propagator wants text."""
    carrier: dict[str, str] = {}
    for key in ("traceparent", "tracestate"):
        value = headers.get(key)
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("ascii", "replace")
        if isinstance(value, str):
            carrier[key] = value
    return carrier


@functools.cache
def _tracer() -> Any:
    # the API's proxy tracer: it follows a tracer provider set after this call
    return trace.get_tracer(_SCOPE)


class _Instruments:
    """The metric instruments, made once from the global meter provider."""

    def __init__(self) -> None:
        meter = metrics.get_meter(_SCOPE)
        self.duration = meter.create_histogram(
            "messaging.client.operation.duration",
            unit="s",
            description="How long handling a received message took (process operations).",
        )
        self.sent = meter.create_counter(
            "messaging.client.sent.messages", unit="{message}", description="Messages sent."
        )
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Messages handed to subscribers.",
        )
        self.redeliveries = meter.create_counter(
            "kiwipy.redeliveries", unit="{message}", description="Tasks received redelivered."
        )
        self.dead_lettered = meter.create_counter(
            "kiwipy.dead_lettered", unit="{message}", description="Tasks parked as dead letters."
        )
        self.reconnections = meter.create_counter(
            "kiwipy.reconnections", unit="{reconnection}", description="Connections recovered."
        )
        self.recovery = meter.create_histogram(
            "kiwipy.recovery.duration",
            unit="s",
            description="From losing a connection to having it and every subscriber back.",
        )
        meter.create_observable_gauge(
            "kiwipy.replies.waiting",
            callbacks=[_observe_replies],
            unit="{reply}",
            description="Replies (task outcomes, RPC responses) awaited now.",
        )


def _observe_replies(_options: Any) -> Any:
    totals: dict[str, int] = {}
    for owner, (system, size) in list(_REPLY_TABLES.items()):
        totals[system] = totals.get(system, 0) + size(owner)
    return [metrics.Observation(total, {"messaging.system": s}) for s, total in totals.items()]


@functools.cache
def _instruments() -> _Instruments:
    return _Instruments()
