"""How a communicator of the shared core (:mod:`kiwipy.core`) turns objects into message
bodies and back, and traces what it sends and handles.

Every message body goes through :meth:`Codec.encode` when sent and :meth:`Codec.decode` when
received, so with an encoder nothing crosses the broker that could not cross RabbitMQ.
Without OpenTelemetry, :meth:`Codec.traced` and :meth:`Codec.handling` return what they are
given (:mod:`kiwipy._tracing`).
"""

from __future__ import annotations

from typing import Any, Optional

from .. import _limits, _tracing, encoders, exceptions
from ._broker import Message, Payload

__all__ = ("BROADCASTS", "Codec")

#: The destination name of broadcasts in traces (RabbitMQ's is the message exchange).
BROADCASTS = "broadcast"


class Codec:
    """The encoder of one communicator, and the tracing of the messages it sends and handles.

    :param encoder: the encoder every body goes through, or ``None`` (passed by reference).
    :param max_size: the largest encoded body, in bytes (see :mod:`kiwipy._limits`).
    :param system: the messaging system named in traces and metrics.
    """

    def __init__(self, encoder: Optional[encoders.Encoder], max_size: int, system: str) -> None:
        self._encoder = encoder
        self._max_size = max_size
        self._system = system

    @property
    def encoder(self) -> Optional[encoders.Encoder]:
        """The encoder every message goes through, or ``None`` (passed by reference)."""
        return self._encoder

    @property
    def name(self) -> str:
        """The encoder's name in the errors of replies (``'memory'`` without one)."""
        return "memory" if self._encoder is None else self._encoder.name

    def encode(self, obj: Any) -> Payload:
        """:returns: the body of *obj* (*obj* itself without an encoder).

        :raises EncodeError: if *obj* cannot be encoded.
        :raises MessageTooLarge: if it is over ``max_size`` bytes once encoded."""
        if self._encoder is None:
            return Payload(obj, None)
        data = _limits.check_size(self._encoder.encode(obj), self._max_size)
        return Payload(data, self._encoder)

    def decode(self, payload: Payload) -> Any:
        """:raises DecodeError: if *payload* cannot be decoded."""
        if payload.encoder is None:
            return payload.data
        return (self._encoder or payload.encoder).decode(payload.data)

    def decode_task(self, payload: Payload) -> tuple[Any, bool]:
        """:returns: the ``(task, no_reply)`` pair of a task message.

        :raises DecodeError: if *payload* cannot be decoded or is not such a pair."""
        body = self.decode(payload)
        if not isinstance(body, (tuple, list)) or len(body) != 2:
            encoder = self._encoder or payload.encoder
            name = encoder.name if encoder is not None else "memory"
            raise exceptions.DecodeError("a task message is a (task, no_reply) pair", encoder=name)
        return body[0], bool(body[1])

    def traced(
        self, payload: Payload, kind: str, destination: str, correlation_id: Optional[str] = None
    ) -> Payload:
        """:returns: *payload* with the trace context headers of its PRODUCER span (itself
        without OpenTelemetry): the one place a send of the shared core is traced."""
        if not _tracing.ENABLED:
            return payload
        headers = _tracing.produce(self._system, kind, destination, correlation_id, payload.data)
        return payload._replace(headers=headers)

    def handling(
        self,
        handling: Any,
        kind: str,
        destination: str,
        payload: Payload,
        correlation_id: Any,
        redelivered: bool = False,
    ) -> Any:
        """:returns: the coroutine *handling* a received message, run in the CONSUMER span
        that continues the sender's trace (*handling* itself without OpenTelemetry)."""
        if not _tracing.ENABLED:
            return handling
        return _tracing.process(
            handling,
            self._system,
            kind,
            destination,
            payload.headers,
            correlation_id,
            payload.data,
            redelivered=redelivered,
        )

    def handling_task(self, handling: Any, queue: str, message: Message) -> Any:
        """:meth:`handling` for a task *message* of *queue*."""
        if not _tracing.ENABLED:
            return handling
        payload, correlation_id = message.payload, message.correlation_id
        return self.handling(handling, "task", queue, payload, correlation_id, message.redelivered)
