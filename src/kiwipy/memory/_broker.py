"""The in-process broker behind ``memory://`` communicators: the smallest
:class:`kiwipy.core.Broker`.

It plays RabbitMQ's part for communicators living on any number of threads and event loops
in one process. Rules that keep it correct (everything below holds under ``_lock``):

1. The broker never runs user code and never waits for a loop. It only decides who gets which
   message, then posts the call to the receiver's loop with ``call_soon_threadsafe``, *after*
   releasing the lock, so receivers may call back into the broker at once.
2. A task message is in exactly one place: ready in its queue (sorted by publication order),
   out in one unsettled :class:`Delivery`, or gone (acked or dead-lettered).
3. Deliveries belong to the :class:`Connection` that received them. Cancelling a consumer
   leaves them with the connection (as ``basic.cancel`` does); closing the connection puts
   every unsettled one back in its original place, as RabbitMQ does on connection loss.
4. A message rejected by a consumer is not offered to that consumer again until the consumer
   is refreshed (its subscribers changed), so a task that every subscriber rejects waits for
   another consumer instead of bouncing in a tight loop.
5. A receiver whose loop is closed is treated like a lost connection.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import itertools
import threading
from typing import Any, Callable, Optional

from .. import _tracing, _unroutable, exceptions
from ..core._broker import Connection, Consumer, Delivery, Message, Payload

__all__ = ("Connection", "Consumer", "Delivery", "MemoryBroker", "Message", "Payload")

_Post = tuple["Connection", Callable[..., None], tuple[Any, ...]]


@dataclasses.dataclass(eq=False)
class _Queue:
    ready: list[tuple[int, Message]] = dataclasses.field(default_factory=list)
    consumers: list[Consumer] = dataclasses.field(default_factory=list)
    dead_letters: list[tuple[Any, str]] = dataclasses.field(default_factory=list)
    unsettled: int = 0
    turn: int = 0  # round-robin position among consumers


class MemoryBroker:
    """Queues, RPC identities and broadcast fan-out shared by the ``memory://`` communicators
    of one process. Thread-safe and independent of any event loop.

    :param name: the broker's name (the part after ``memory://``).
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._queues: dict[str, _Queue] = {}
        self._connections: list[Connection] = []
        self._rpc: dict[str, Connection] = {}
        self._seq = itertools.count(1)

    def __repr__(self) -> str:
        return f"<MemoryBroker {self.name!r}>"

    # Connections

    def connect(
        self,
        loop: asyncio.AbstractEventLoop,
        on_reply: Callable[[str, Payload], None],
        on_broadcast: Callable[[Payload], None],
    ) -> Connection:
        """:returns: a new connection whose callbacks are run on *loop*."""
        connection = Connection(loop, on_reply, on_broadcast)
        with self._lock:
            self._connections.append(connection)
        return connection

    def close(self, connection: Connection) -> None:
        """Release everything *connection* holds: its RPC identities, its consumers, and its
        unsettled deliveries, which go back to their queues in their original places."""
        posts: list[_Post] = []
        with self._lock:
            if connection.closed:
                return
            connection.closed = True
            self._connections.remove(connection)
            for key in connection.rpc:
                self._rpc.pop(key, None)
            for consumer in connection.consumers:
                consumer.cancelled = True
                self._queues[consumer.queue].consumers.remove(consumer)
            touched = {delivery.queue for delivery in connection.unsettled}
            for delivery in list(connection.unsettled):
                self._settle(delivery)
                self._put_back(delivery.message, delivery.queue)
            # Wake pending pulls so they notice the connection is gone instead of waiting.
            posts.extend((connection, notify, ()) for _, notify in connection.waiters)
            connection.waiters.clear()
            for name in touched:
                posts.extend(self._dispatch(name))
        self._flush(posts)

    # Task queues

    def publish(self, queue: str, message: Message) -> None:
        """Put *message* at the end of *queue* (declared on first use) and dispatch it."""
        with self._lock:
            message.seq = next(self._seq)
            self._queue(queue).ready.append((message.seq, message))
            posts = self._dispatch(queue)
        self._flush(posts)

    def publish_many(self, queue: str, messages: list[Message]) -> None:
        """:meth:`publish` each of *messages* (nothing can fail half-way here)."""
        with self._lock:
            ready = self._queue(queue).ready
            for message in messages:
                message.seq = next(self._seq)
                ready.append((message.seq, message))
            posts = self._dispatch(queue)
        self._flush(posts)

    def cancel_task(self, queue: str, message: Message) -> None:
        """The queued *message* is in this process: it says so itself."""
        message.cancelled = True

    def consume(
        self,
        connection: Connection,
        queue: str,
        prefetch: int,
        callback: Callable[[Delivery], None],
    ) -> Consumer:
        """Start pushing messages of *queue* to ``callback(delivery)`` on the connection's
        loop, at most *prefetch* unsettled at a time (0: no limit)."""
        with self._lock:
            self._check_open(connection)
            consumer = Consumer(next(self._seq), queue, connection, callback, prefetch)
            connection.consumers.append(consumer)
            self._queue(queue).consumers.append(consumer)
            posts = self._dispatch(queue)
        self._flush(posts)
        return consumer

    def cancel(self, consumer: Consumer) -> None:
        """Stop pushing to *consumer*; its unsettled deliveries stay with its connection."""
        with self._lock:
            if consumer.cancelled:
                return
            consumer.cancelled = True
            consumer.connection.consumers.remove(consumer)
            self._queue(consumer.queue).consumers.remove(consumer)

    def refresh(self, consumer: Consumer) -> None:
        """Forget which messages *consumer* rejected (its subscribers changed) and offer
        them to it again."""
        with self._lock:
            consumer.tag = next(self._seq)
            posts = self._dispatch(consumer.queue)
        self._flush(posts)

    def get(
        self, connection: Connection, queue: str, notify: Optional[Callable[[], None]] = None
    ) -> Optional[Delivery]:
        """Take the first ready message of *queue* (``basic.get``). If there is none and
        *notify* is given, ``notify()`` is posted once when a message becomes ready.

        :raises CommunicatorClosed: if *connection* is closed.
        """
        with self._lock:
            self._check_open(connection)
            ready = self._queue(queue).ready
            if ready:
                return self._deliver(ready.pop(0)[1], queue, connection, None)
            if notify is not None:
                connection.waiters.append((queue, notify))
            return None

    def forget_waiter(self, connection: Connection, notify: Callable[[], None]) -> None:
        """Withdraw a *notify* registered by :meth:`get` (no error if it already fired)."""
        with self._lock:
            connection.waiters[:] = [w for w in connection.waiters if w[1] is not notify]

    def ack(self, delivery: Delivery) -> None:
        """The message is done with (no-op if it was already given back)."""
        self._finish(delivery, None)

    def requeue(self, delivery: Delivery, reject: bool = False) -> None:
        """Put the message back in its original place. With *reject*, its consumer declined
        it: it is offered to other consumers (or to this one once refreshed)."""
        with self._lock:
            if delivery.settled:
                return
            consumer = delivery.consumer
            self._settle(delivery)
            if reject and consumer is not None:
                delivery.message.rejected_by.add(consumer.tag)
            self._put_back(delivery.message, delivery.queue)
            posts = self._dispatch(delivery.queue)
        self._flush(posts)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Remove the message from circulation, keeping it with *reason* for inspection."""
        _tracing.dead_lettered(_tracing.MEMORY, delivery.queue, reason)
        self._finish(delivery, reason)

    def queue_stats(self, queue: str) -> tuple[int, int]:
        """:returns: ``(ready, unsettled)`` message counts of *queue*."""
        with self._lock:
            state = self._queue(queue)
            return len(state.ready), state.unsettled

    def dead_letters(self, queue: str) -> list[tuple[Any, str]]:
        """:returns: the ``(payload data, reason)`` of every message dead-lettered in *queue*."""
        with self._lock:
            return list(self._queue(queue).dead_letters)

    # RPC, replies and broadcasts

    def bind_rpc(
        self, connection: Connection, key: str, callback: Callable[[str, Message], None]
    ) -> None:
        """Route RPCs for *key* to ``callback(key, message)``.

        :raises DuplicateSubscriberIdentifier: if any connection already holds *key*.
        """
        with self._lock:
            self._check_open(connection)
            if key in self._rpc:
                raise exceptions.DuplicateSubscriberIdentifier(f"RPC identifier '{key}'")
            self._rpc[key] = connection
            connection.rpc[key] = callback

    def unbind_rpc(self, connection: Connection, key: str) -> None:
        """Stop routing RPCs for *key* to *connection*."""
        with self._lock:
            if connection.rpc.pop(key, None) is not None:
                del self._rpc[key]

    def send_rpc(self, key: str, message: Message) -> None:
        """Hand *message* to whoever holds *key*.

        :raises UnroutableError: if nobody does.
        """
        with self._lock:
            holder = self._rpc.get(key)
            if holder is None:
                raise exceptions.UnroutableError(_unroutable.no_rpc_subscriber(key))
            callback = holder.rpc[key]
        if not self._flush([(holder, callback, (key, message))]):
            raise exceptions.UnroutableError(_unroutable.no_rpc_subscriber(key))  # just removed

    def send_reply(
        self, reply_to: object, correlation_id: str, payload: Payload, final: bool = True
    ) -> None:
        """Deliver a reply; dropped if its connection has closed (like a deleted reply queue)."""
        connection = reply_to
        if isinstance(connection, Connection) and not connection.closed:
            self._flush([(connection, connection.on_reply, (correlation_id, payload))])

    def broadcast(self, payload: Payload) -> None:
        """Deliver a broadcast to every open connection."""
        with self._lock:
            posts = [(c, c.on_broadcast, (payload,)) for c in self._connections]
        self._flush(posts)

    # Internals (called with the lock held, except _flush)

    def _queue(self, name: str) -> _Queue:
        state = self._queues.get(name)
        if state is None:
            state = self._queues[name] = _Queue()
        return state

    @staticmethod
    def _check_open(connection: Connection) -> None:
        if connection.closed:
            raise exceptions.CommunicatorClosed

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

    def _finish(self, delivery: Delivery, dead_reason: Optional[str]) -> None:
        with self._lock:
            if delivery.settled:
                return
            self._settle(delivery)
            if dead_reason is not None:
                letters = self._queue(delivery.queue).dead_letters
                letters.append((delivery.message.payload.data, dead_reason))
            posts = self._dispatch(delivery.queue)
        self._flush(posts)

    def _dispatch(self, name: str) -> list[_Post]:
        """Hand ready messages of queue *name* to consumers with room, round-robin, oldest
        first; a message skips the consumers that rejected it."""
        state = self._queue(name)
        posts = self._take_waiters(name)
        index = 0
        while index < len(state.ready) and any(c.has_room() for c in state.consumers):
            message = state.ready[index][1]
            consumer = self._pick(state, message)
            if consumer is None:
                index += 1
                continue
            del state.ready[index]
            delivery = self._deliver(message, name, consumer.connection, consumer)
            posts.append((consumer.connection, consumer.callback, (delivery,)))
        return posts

    @staticmethod
    def _pick(state: _Queue, message: Message) -> Optional[Consumer]:
        count = len(state.consumers)
        for offset in range(count):
            consumer = state.consumers[(state.turn + offset) % count]
            if consumer.has_room() and consumer.tag not in message.rejected_by:
                state.turn = (state.turn + offset + 1) % count
                return consumer
        return None

    def _take_waiters(self, name: str) -> list[_Post]:
        """Remove and return the pull waiters of queue *name*, if it has a ready message."""
        if not self._queue(name).ready:
            return []
        taken: list[_Post] = []
        for connection in self._connections:
            keep = []
            for queue, notify in connection.waiters:
                if queue == name:
                    taken.append((connection, notify, ()))
                else:
                    keep.append((queue, notify))
            connection.waiters[:] = keep
        return taken

    def _flush(self, posts: list[_Post]) -> bool:
        """Post the calls to their loops. A closed loop means a lost connection.

        :returns: whether every call was posted.
        """
        lost: list[Connection] = []
        for connection, fn, args in posts:
            try:
                connection.loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop is closed: its communicator is gone
                lost.append(connection)
        for connection in lost:
            self.close(connection)
        return not lost
