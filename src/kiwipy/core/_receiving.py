"""The broadcast subscribers of a communicator of the shared core (:mod:`kiwipy.core`).

Every broadcast reaches every open connection of the broker; each of the communicator's
subscribers handles it in a job of its own, whose outcome goes nowhere (an exception is
logged). A broadcast that cannot be decoded is logged and dropped. When the subscribers are a
thread facade's, the broker's thread hands the broadcast to them itself
(:meth:`BroadcastReceiver.on_broadcast_direct`, :func:`kiwipy._broadcasts.hand_over`).
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Protocol

import shortuuid

from .. import _broadcasts, _tracing, exceptions
from .._outcome import EXCEPTION, invoke
from ..communications import BroadcastSubscriber
from ._broker import Payload
from ._codec import BROADCASTS, Codec
from ._jobs import Jobs

__all__ = ("BroadcastHost", "BroadcastReceiver")

# The logger of the communicator this receiver belongs to.
_LOGGER = logging.getLogger("kiwipy.core._communicator")


class BroadcastHost(Protocol):
    """What the broadcast receiver needs of the communicator that owns it (implemented by
    :class:`~kiwipy.core.AsyncBrokerCommunicator`, which subscribers are called with). A
    protocol, so that this module does not import the communicator's, which imports it."""

    _closed: bool


class BroadcastReceiver:
    """Calls the broadcast subscribers of one communicator.

    :param host: the owning communicator.
    :param codec: its encoding and tracing.
    :param jobs: the jobs the subscribers are called in.
    """

    def __init__(self, host: BroadcastHost, codec: Codec, jobs: Jobs) -> None:
        self._host = host
        self._codec = codec
        self._jobs = jobs
        self._subscribers: dict[Any, BroadcastSubscriber] = {}
        self._tally = _broadcasts.Tally()
        self._direct = False  # whether broadcasts may be handed over (kiwipy._broadcasts)

    @property
    def tally(self) -> _broadcasts.Tally:
        """The count of handlers started (one per subscriber and broadcast) and finished."""
        return self._tally

    def add(self, subscriber: BroadcastSubscriber, identifier: Any) -> Any:
        """:returns: *identifier* (a new one if ``None``) of *subscriber*.

        :raises DuplicateSubscriberIdentifier: if *identifier* is taken here."""
        identifier = shortuuid.uuid() if identifier is None else identifier
        if identifier in self._subscribers:
            raise exceptions.DuplicateSubscriberIdentifier(f"Broadcast identifier '{identifier}'")
        self._subscribers[identifier] = subscriber
        self._direct = _broadcasts.can_hand_over(self._subscribers.values())
        return identifier

    def remove(self, identifier: Any) -> None:
        """:raises ValueError: if no subscriber has *identifier*."""
        if self._subscribers.pop(identifier, None) is None:
            raise ValueError(f"Broadcast subscriber '{identifier}' unknown")
        self._direct = _broadcasts.can_hand_over(self._subscribers.values())

    def on_broadcast_direct(self, payload: Payload) -> bool:
        """Hand the broadcast *payload* to the subscribers' workers from the calling thread
        (the broker's: :func:`kiwipy.core._broker.post`), if they can take it that way.

        :returns: whether it was handled (else it is to be posted to :meth:`on_broadcast`).
        """
        if not self._subscribers:
            return True  # nobody to call: the loop need not wake up for it
        if not self._direct or self._host._closed:
            return False
        subscribers = list(self._subscribers.values())
        args = self._arguments(payload)
        if args is not None:
            _broadcasts.hand_over(subscribers, args, self._tally, _LOGGER)
        return True

    def on_broadcast(self, payload: Payload) -> None:
        """Call every subscriber with the broadcast *payload* (posted to the communicator's
        loop by the broker)."""
        if self._host._closed or not self._subscribers:
            return
        args = self._arguments(payload)
        if args is None:
            return
        for subscriber in list(self._subscribers.values()):
            # Counted as the delivery arrives, before the handler runs (kiwipy._thread).
            self._tally.started()
            calling = self._call(subscriber, args)
            handling = self._codec.handling(calling, "broadcast", BROADCASTS, payload, None)
            handler = self._jobs.spawn(handling)
            handler.add_done_callback(self._tally.finished)

    def _arguments(self, payload: Payload) -> Optional[tuple[Any, ...]]:
        """:returns: the subscribers' arguments after the communicator, or ``None`` (logged)
        if *payload* cannot be decoded into kiwipy 0.9's envelope (any thread)."""
        try:
            envelope = self._codec.decode(payload)
            return tuple(envelope[key] for key in ("body", "sender", "subject", "correlation_id"))
        except (exceptions.DecodeError, TypeError, KeyError):
            _LOGGER.exception("dropping a broadcast that cannot be decoded")
            return None

    async def _call(self, subscriber: BroadcastSubscriber, args: tuple[Any, ...]) -> None:
        result = await invoke(subscriber, (self._host, *args), futures=False)
        if result.kind == EXCEPTION:
            _tracing.failed(result.value)
            _broadcasts.log_failure(_LOGGER, subscriber, result.value)
