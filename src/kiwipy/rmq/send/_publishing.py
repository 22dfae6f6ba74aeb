"""The retry policy of one confirmed publish (see :mod:`kiwipy.rmq.connection._session`).

Invariants:

* A publish is over within ``recovery_timeout`` seconds of its start: confirmed, or with a
  typed error. It is never reported as sent unless the broker confirmed it.
* ``basic.return`` (no queue bound) raises :class:`~kiwipy.UnroutableError` and a message the
  broker refused because of itself (its exchange is missing) the translated error: sending
  those again cannot help.
* With ``retry``: a nack is sent again on a fresh channel, after a pause that doubles from
  0.05 s up to 1 s, until the deadline (a quorum queue nacks every publish on a channel
  opened during its leader election, which lasts about 0.2 s after its leader's node died,
  and can keep nacking for as long as that node stays down; a fresh channel gets confirms
  once the election settled: docs/cluster.md); a queue that keeps refusing (``x-overflow:
  reject-publish`` on a full queue) raises :class:`~kiwipy.PublishNacked` at the deadline. A
  publish
  whose channel the broker closed because of *another* message is sent again once; one whose
  connection broke is sent again after the reconnection, as often as the deadline allows.
  The receiver may see such a message twice, never zero times.
* Without ``retry`` (RPC requests, broadcasts) nothing is sent twice: a broken publish raises
  :class:`~kiwipy.ConnectionLost`, saying that the outcome is unknown.
* A confirm is never awaited past the end of the channel's connection
  (:func:`kiwipy.rmq.connection._amqp.guarded`).
"""

from __future__ import annotations

import asyncio
import logging

import aiormq.abc

from ... import exceptions
from ..connection import _aiormq_boundary, _amqp
from ..connection._session_view import SessionView

__all__ = ("PublishAttempt", "close_when_drained")

_LOGGER = logging.getLogger("kiwipy.rmq.communicator")

#: Pause before sending again after a failure, so a failure that repeats cannot spin.
_PAUSE = 0.05
#: Longest pause between two attempts of a nacked publish.
_NACK_PAUSE_MAX = 1.0
#: Seconds the confirm of a send again after a nack gets at least, even past the deadline:
#: a broker answers in milliseconds, and without it the last attempt, made just before the
#: deadline, would end "unknown" instead of with the broker's nack.
_RETRY_CONFIRM_MIN = 0.25
#: Seconds a replaced publish channel may take to receive its last confirms.
_DRAIN_TIMEOUT = 10.0


class PublishAttempt:
    """The retry policy of one publish (module doc), with its deadline."""

    def __init__(self, session: SessionView, exchange: str, routing_key: str, retry: bool) -> None:
        self._session = session
        self._exchange = exchange
        self._retry = retry
        self._nacks = 0
        self._channel_failed = False
        self.timeout = session.options["recovery_timeout"]
        self.deadline = session.loop.time() + self.timeout
        self.what = f"publishing to {exchange!r}/{routing_key!r}"

    def remaining(self) -> float:
        return max(self.deadline - self._session.loop.time(), 0.001)

    def confirm_window(self) -> float:
        """:returns: seconds to wait for this attempt's confirm."""
        remaining = self.remaining()
        return max(remaining, _RETRY_CONFIRM_MIN) if self._nacks else remaining

    def _may_retry(self) -> bool:
        session = self._session
        if not self._retry or session.loop.time() >= self.deadline:
            return False
        return session.can_reconnect

    async def after_loss(self, exc: exceptions.ConnectionLost) -> None:
        """No channel could be had: return to try again within the deadline, or raise."""
        if not self._may_retry():
            raise exc
        await asyncio.sleep(_PAUSE)

    async def after(self, exc: BaseException, channel: aiormq.abc.AbstractChannel) -> None:
        """The publish on *channel* raised *exc*: return to send it again, or raise the
        translated error."""
        failure = _amqp.publish_failure(exc, self._exchange)
        if failure == _amqp.NACKED and self._retry and self._may_retry():
            self._nacks += 1
            if self._nacks == 1:
                _LOGGER.info("%s was nacked; sending it again on a fresh channel", self.what)
            self._session.renew_publish_channel(channel)
            pause = min(_PAUSE * 2 ** (self._nacks - 1), _NACK_PAUSE_MAX)
            await asyncio.sleep(min(pause, self.remaining()))
            return
        if failure == _amqp.NACKED and self._nacks:
            _LOGGER.info("%s still nacked after %d attempts; giving up", self.what, self._nacks + 1)
        if failure != _amqp.BROKEN:
            raise _amqp.translate(exc, self.what, "basic_publish") from exc
        if isinstance(exc, asyncio.TimeoutError) and self.remaining() <= 0.001:
            raise self._unknown(f"no confirm from the broker within {self.timeout:g} s") from exc
        if _amqp.is_channel_error(exc):  # the broker closed the channel, once is enough
            if self._may_retry() and not self._channel_failed:
                self._channel_failed = True
                return
        elif self._may_retry():
            _LOGGER.debug("%s broke (%r); sending it again", self.what, exc)
            await asyncio.sleep(_PAUSE)
            return
        raise self._unknown(f"{type(exc).__name__}: {exc}") from exc

    def _unknown(self, why: str) -> exceptions.ConnectionLost:
        return _amqp.ConnectionGone(
            f"{self.what} failed before the broker confirmed it ({why}); "
            "it may or may not have been taken"
        )


async def close_when_drained(channel: aiormq.abc.AbstractChannel) -> None:
    """Close *channel* once the confirms of what was sent on it arrived (or after
    :data:`_DRAIN_TIMEOUT` seconds): a nacked publish moves to a fresh channel, the others
    in flight on the old one still get their answers."""
    waiting = _aiormq_boundary.pending_confirms(channel)
    if waiting:
        await asyncio.wait(waiting, timeout=_DRAIN_TIMEOUT)
    await _amqp.bounded(channel.close())
