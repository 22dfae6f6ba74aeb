"""Noticing that the RPC subscriber a reply is awaited from is gone (bug B16).

This library's RPC subscribers hold their identifier as an *exclusive* queue named
``<message exchange>.rpc.<identifier>`` (:mod:`kiwipy.rmq.messages`), which the broker deletes
when the subscriber is removed or its connection dies. A passive declare of that name from
another connection answers ``RESOURCE_LOCKED`` (405) while it is held, ``declare-ok`` when
the asking connection holds it itself, and ``NOT_FOUND`` (404) once it is gone.

Invariants:

* While replies are awaited from RPC subscribers, each such queue is probed every
  ``rpc_check_interval`` seconds, and at once when a reply starts being awaited from a queue
  not probed yet. Probes run on a channel of their own (an answer of 404 or 405 closes it).
* A queue that was seen held and is then missing on two probes at least one interval apart
  ends the replies awaited from it with :class:`~kiwipy.ReplyLost`: within about two
  intervals of the subscriber's end. Missing once is not enough: a subscriber whose
  connection is being restored comes back under the same name and still answers the
  requests it had in hand.
* A queue never seen held is never judged: kiwipy 0.9 subscribers use random queue names,
  so nothing can be said about them (replies from them can only end with the connection).
* Nothing is probed while our own connection is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable, Optional

from aiormq import exceptions as amqp_errors

from ... import exceptions
from ..connection._session import PROBE, Session

__all__ = ("ResponderCheck",)

_LOGGER = logging.getLogger("kiwipy.rmq.messages")

HELD, MISSING, UNKNOWN = "held", "missing", "unknown"


class _Seen:
    __slots__ = ("held", "missing_since")

    def __init__(self) -> None:
        self.held = False
        self.missing_since: Optional[float] = None


class ResponderCheck:
    """Probes the queues of the RPC subscribers replies are awaited from (module doc).

    :param session: the session to probe with.
    :param watched: returns the queues replies are awaited from right now.
    :param fail: ``fail(queue, exc)`` ends every reply awaited from *queue* with *exc*.
    """

    def __init__(
        self,
        session: Session,
        watched: Callable[[], set[str]],
        fail: Callable[[str, BaseException], None],
    ) -> None:
        self._session = session
        self._watched = watched
        self._fail = fail
        self._interval = float(session.options["rpc_check_interval"])
        self._seen: dict[str, _Seen] = {}
        self._wake = asyncio.Event()
        self._task: Optional[asyncio.Task[None]] = None

    def watch(self, queue: str) -> None:
        """A reply is now awaited from *queue*: probe it soon if it is new."""
        if self._interval <= 0:
            return
        if queue not in self._seen:
            self._seen[queue] = _Seen()
            self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        last_round = self._session.loop.time()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            watched = self._watched()
            for queue in set(self._seen) - watched:
                del self._seen[queue]
            if not watched:
                return
            now = self._session.loop.time()
            full = now - last_round >= self._interval * 0.9
            if full:
                last_round = now
            for queue in watched:
                seen = self._seen.setdefault(queue, _Seen())
                if full or not seen.held:
                    await self._judge(queue, seen)

    async def _judge(self, queue: str, seen: _Seen) -> None:
        state = await self._probe(queue)
        now = self._session.loop.time()
        if state == HELD:
            seen.held, seen.missing_since = True, None
        elif state == MISSING and seen.held:
            if seen.missing_since is None:
                seen.missing_since = now
            elif now - seen.missing_since >= self._interval * 0.9:
                gone = now - seen.missing_since
                self._fail(queue, _lost(queue, gone))

    async def _probe(self, queue: str) -> str:
        if not self._session.is_connected:
            return UNKNOWN
        try:
            await self._session.call(
                f"checking RPC subscriber {queue!r}", "queue_declare", purpose=PROBE,
                queue=queue, passive=True,
            )  # fmt: skip
        except amqp_errors.ChannelLockedResource:
            return HELD
        except amqp_errors.ChannelNotFoundEntity:
            return MISSING
        except (exceptions.KiwiError, amqp_errors.AMQPError) as exc:
            _LOGGER.debug("could not check %s: %r", queue, exc)
            return UNKNOWN
        return HELD


def _lost(queue: str, gone: float) -> exceptions.ReplyLost:
    return exceptions.ReplyLost(
        f"the RPC subscriber of {queue!r} is gone (its queue has been missing for "
        f"{gone:.1f} s); no reply can come"
    )
