"""The task queues of the in-process broker (:class:`kiwipy.memory.MemoryBroker`): ready
messages, consumers, unsettled deliveries and the dispatch between them.

:class:`TaskQueues` holds no lock and posts nothing: the broker calls it with its lock held,
and it returns the calls to post to the receivers' loops (``Post``), which the broker makes
after releasing the lock. Rules it keeps:

1. A task message is in exactly one place: ready in its queue (sorted by publication order),
   out in one unsettled :class:`~kiwipy.core.Delivery`, or gone (acked or dead-lettered).
2. Deliveries belong to the :class:`~kiwipy.core.Connection` that received them. Cancelling a
   consumer leaves them with the connection (as ``basic.cancel`` does); closing the
   connection puts every unsettled one back in its original place, as RabbitMQ does on
   connection loss.
3. A message rejected by a consumer is not offered to that consumer again until the consumer
   is refreshed (its subscribers changed), so a task that every subscriber rejects waits for
   another consumer instead of bouncing in a tight loop.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from typing import Any, Callable, Optional

from .. import exceptions
from ..core._broker import Connection, Consumer, Delivery, Message, Post

__all__ = ("TaskQueues", "check_open")


@dataclasses.dataclass(eq=False)
class _Queue:
    ready: list[tuple[int, Message]] = dataclasses.field(default_factory=list)
    consumers: list[Consumer] = dataclasses.field(default_factory=list)
    dead_letters: list[tuple[Any, str]] = dataclasses.field(default_factory=list)
    unsettled: int = 0
    turn: int = 0  # round-robin position among consumers


class TaskQueues:
    """The task queues of one broker (declared on first use). Not thread-safe: every method
    is called with the broker's lock held.

    :param connections: the broker's open connections (only read here, for their pending
        pulls).
    :param seq: the broker's counter of publication order and consumer tags.
    """

    def __init__(self, connections: list[Connection], seq: itertools.count[int]) -> None:
        self._connections = connections
        self._seq = seq
        self._queues: dict[str, _Queue] = {}

    def release(self, connection: Connection) -> list[Post]:
        """Cancel the consumers of the closing *connection*, put its unsettled deliveries
        back in their original places and wake its pending pulls (so they notice the
        connection is gone instead of waiting)."""
        for consumer in connection.consumers:
            consumer.cancelled = True
            self._queues[consumer.queue].consumers.remove(consumer)
        touched = {delivery.queue for delivery in connection.unsettled}
        for delivery in list(connection.unsettled):
            self._settle(delivery)
            self._put_back(delivery.message, delivery.queue)
        posts: list[Post] = [(connection, notify, ()) for _, notify in connection.waiters]
        connection.waiters.clear()
        for name in touched:
            posts.extend(self._dispatch(name))
        return posts

    def publish(self, queue: str, messages: list[Message]) -> list[Post]:
        """Put *messages* at the end of *queue*, in order, and dispatch them."""
        ready = self._queue(queue).ready
        for message in messages:
            message.seq = next(self._seq)
            ready.append((message.seq, message))
        return self._dispatch(queue)

    def consume(
        self,
        connection: Connection,
        queue: str,
        prefetch: int,
        callback: Callable[[Delivery], None],
    ) -> tuple[Consumer, list[Post]]:
        """:returns: a new consumer of *queue* for *connection*, and the first deliveries."""
        check_open(connection)
        consumer = Consumer(next(self._seq), queue, connection, callback, prefetch)
        connection.consumers.append(consumer)
        self._queue(queue).consumers.append(consumer)
        return consumer, self._dispatch(queue)

    def cancel(self, consumer: Consumer) -> None:
        """Stop pushing to *consumer*; its unsettled deliveries stay with its connection."""
        if consumer.cancelled:
            return
        consumer.cancelled = True
        consumer.connection.consumers.remove(consumer)
        self._queue(consumer.queue).consumers.remove(consumer)

    def refresh(self, consumer: Consumer) -> list[Post]:
        """Forget which messages *consumer* rejected and offer them to it again."""
        consumer.tag = next(self._seq)
        return self._dispatch(consumer.queue)

    def get(
        self, connection: Connection, queue: str, notify: Optional[Callable[[], None]]
    ) -> Optional[Delivery]:
        """Take the first ready message of *queue*, or register *notify* (if given) as a
        pending pull of *connection* woken when one becomes ready.

        :raises CommunicatorClosed: if *connection* is closed.
        """
        check_open(connection)
        ready = self._queue(queue).ready
        if ready:
            return self._deliver(ready.pop(0)[1], queue, connection, None)
        if notify is not None:
            connection.waiters.append((queue, notify))
        return None

    def requeue(self, delivery: Delivery, reject: bool) -> list[Post]:
        """Put the message of *delivery* back in its original place (no-op if settled);
        with *reject*, not to be offered to its consumer again until refreshed."""
        if delivery.settled:
            return []
        consumer = delivery.consumer
        self._settle(delivery)
        if reject and consumer is not None:
            delivery.message.rejected_by.add(consumer.tag)
        self._put_back(delivery.message, delivery.queue)
        return self._dispatch(delivery.queue)

    def finish(self, delivery: Delivery, dead_reason: Optional[str]) -> list[Post]:
        """Settle *delivery* for good (no-op if settled): acked, or dead-lettered with
        *dead_reason*, kept for inspection."""
        if delivery.settled:
            return []
        self._settle(delivery)
        if dead_reason is not None:
            letters = self._queue(delivery.queue).dead_letters
            letters.append((delivery.message.payload.data, dead_reason))
        return self._dispatch(delivery.queue)

    def stats(self, queue: str) -> tuple[int, int]:
        """:returns: ``(ready, unsettled)`` message counts of *queue*."""
        state = self._queue(queue)
        return len(state.ready), state.unsettled

    def dead_letters(self, queue: str) -> list[tuple[Any, str]]:
        """:returns: the ``(payload data, reason)`` of every message dead-lettered in *queue*."""
        return list(self._queue(queue).dead_letters)

    # Internals

    def _queue(self, name: str) -> _Queue:
        state = self._queues.get(name)
        if state is None:
            state = self._queues[name] = _Queue()
        return state

    def _deliver(
        self, message: Message, queue: str, connection: Connection, consumer: Optional[Consumer]
    ) -> Delivery:
        delivery = Delivery(message, queue, connection, consumer)
        connection.unsettled.add(delivery)
        self._queue(queue).unsettled += 1
        if consumer is not None:
            consumer.inflight += 1
        return delivery

    def _settle(self, delivery: Delivery) -> None:
        delivery.settled = True
        delivery.connection.unsettled.discard(delivery)
        self._queue(delivery.queue).unsettled -= 1
        if delivery.consumer is not None:
            delivery.consumer.inflight -= 1

    def _put_back(self, message: Message, queue: str) -> None:
        message.redelivered = True
        bisect.insort(self._queue(queue).ready, (message.seq, message))

    def _dispatch(self, name: str) -> list[Post]:
        """Hand ready messages of queue *name* to consumers with room, round-robin, oldest
        first; a message skips the consumers that rejected it."""
        state = self._queue(name)
        posts = self._take_waiters(name)
        index = 0
        while index < len(state.ready) and any(c.has_room() for c in state.consumers):
            message = state.ready[index][1]
            consumer = _pick(state, message)
            if consumer is None:
                index += 1
                continue
            del state.ready[index]
            delivery = self._deliver(message, name, consumer.connection, consumer)
            posts.append((consumer.connection, consumer.callback, (delivery,)))
        return posts

    def _take_waiters(self, name: str) -> list[Post]:
        """Remove and return the pull waiters of queue *name*, if it has a ready message."""
        if not self._queue(name).ready:
            return []
        taken: list[Post] = []
        for connection in self._connections:
            keep = []
            for queue, notify in connection.waiters:
                if queue == name:
                    taken.append((connection, notify, ()))
                else:
                    keep.append((queue, notify))
            connection.waiters[:] = keep
        return taken


def _pick(state: _Queue, message: Message) -> Optional[Consumer]:
    count = len(state.consumers)
    for offset in range(count):
        consumer = state.consumers[(state.turn + offset) % count]
        if consumer.has_room() and consumer.tag not in message.rejected_by:
            state.turn = (state.turn + offset + 1) % count
            return consumer
    return None


def check_open(connection: Connection) -> None:
    """:raises CommunicatorClosed: if *connection* is closed."""
    if connection.closed:
        raise exceptions.CommunicatorClosed
