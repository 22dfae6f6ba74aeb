"""The in-process broker behind ``memory://`` communicators: the smallest
:class:`kiwipy.core.Broker`.

It plays RabbitMQ's part for communicators living on any number of threads and event loops
in one process: :class:`MemoryBroker` holds the connections, routes RPCs, replies and
broadcasts, and guards everything with one lock; its task queues (ready messages,
consumers, deliveries, dispatch) are :class:`kiwipy.memory._queues.TaskQueues`, which keeps
the task rules. Rules of the broker (everything below holds under ``_lock``):

1. The broker never runs user code and never waits for a loop. It only decides who gets which
   message, then posts the call to the receiver's loop with ``call_soon_threadsafe``, *after*
   releasing the lock, so receivers may call back into the broker at once.
2. Closing a connection releases its RPC identities, and its task queue state goes with it
   (consumers cancelled, unsettled deliveries back in their original places, pending pulls
   woken), as RabbitMQ does on connection loss.
3. A receiver whose loop is closed is treated like a lost connection.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any, Callable, Optional

from .. import _tracing, _unroutable, exceptions
from ..core._broker import Connection, Consumer, Delivery, Message, Payload, Post, post
from ._queues import TaskQueues, check_open

__all__ = ("Connection", "Consumer", "Delivery", "MemoryBroker", "Message", "Payload")


class MemoryBroker:
    """Queues, RPC identities and broadcast fan-out shared by the ``memory://`` communicators
    of one process. Thread-safe and independent of any event loop.

    :param name: the broker's name (the part after ``memory://``).
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._connections: list[Connection] = []
        self._rpc: dict[str, Connection] = {}
        self._tasks = TaskQueues(self._connections, itertools.count(1))

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
        with self._lock:
            if connection.closed:
                return
            connection.closed = True
            self._connections.remove(connection)
            for key in connection.rpc:
                self._rpc.pop(key, None)
            posts = self._tasks.release(connection)
        self._flush(posts)

    # Task queues

    def publish(self, queue: str, message: Message) -> None:
        """Put *message* at the end of *queue* (declared on first use) and dispatch it."""
        with self._lock:
            posts = self._tasks.publish(queue, [message])
        self._flush(posts)

    def publish_many(self, queue: str, messages: list[Message]) -> None:
        """:meth:`publish` each of *messages* (nothing can fail half-way here)."""
        with self._lock:
            posts = self._tasks.publish(queue, messages)
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
            consumer, posts = self._tasks.consume(connection, queue, prefetch, callback)
        self._flush(posts)
        return consumer

    def cancel(self, consumer: Consumer) -> None:
        """Stop pushing to *consumer*; its unsettled deliveries stay with its connection."""
        with self._lock:
            self._tasks.cancel(consumer)

    def refresh(self, consumer: Consumer) -> None:
        """Forget which messages *consumer* rejected (its subscribers changed) and offer
        them to it again."""
        with self._lock:
            posts = self._tasks.refresh(consumer)
        self._flush(posts)

    def get(
        self, connection: Connection, queue: str, notify: Optional[Callable[[], None]] = None
    ) -> Optional[Delivery]:
        """Take the first ready message of *queue* (``basic.get``). If there is none and
        *notify* is given, ``notify()`` is posted once when a message becomes ready.

        :raises CommunicatorClosed: if *connection* is closed.
        """
        with self._lock:
            return self._tasks.get(connection, queue, notify)

    def forget_waiter(self, connection: Connection, notify: Callable[[], None]) -> None:
        """Withdraw a *notify* registered by :meth:`get` (no error if it already fired)."""
        with self._lock:
            connection.waiters[:] = [w for w in connection.waiters if w[1] is not notify]

    def ack(self, delivery: Delivery) -> None:
        """The message is done with (no-op if it was already given back)."""
        with self._lock:
            posts = self._tasks.finish(delivery, None)
        self._flush(posts)

    def requeue(self, delivery: Delivery, reject: bool = False) -> None:
        """Put the message back in its original place. With *reject*, its consumer declined
        it: it is offered to other consumers (or to this one once refreshed)."""
        with self._lock:
            posts = self._tasks.requeue(delivery, reject)
        self._flush(posts)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Remove the message from circulation, keeping it with *reason* for inspection."""
        _tracing.dead_lettered(_tracing.MEMORY, delivery.queue, reason)
        with self._lock:
            posts = self._tasks.finish(delivery, reason)
        self._flush(posts)

    def queue_stats(self, queue: str) -> tuple[int, int]:
        """:returns: ``(ready, unsettled)`` message counts of *queue*."""
        with self._lock:
            return self._tasks.stats(queue)

    def dead_letters(self, queue: str) -> list[tuple[Any, str]]:
        """:returns: the ``(payload data, reason)`` of every message dead-lettered in *queue*."""
        with self._lock:
            return self._tasks.dead_letters(queue)

    # RPC, replies and broadcasts

    def bind_rpc(
        self, connection: Connection, key: str, callback: Callable[[str, Message], None]
    ) -> None:
        """Route RPCs for *key* to ``callback(key, message)``.

        :raises DuplicateSubscriberIdentifier: if any connection already holds *key*.
        """
        with self._lock:
            check_open(connection)
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
            posts: list[Post] = [(c, c.on_broadcast, (payload,)) for c in self._connections]
        self._flush(posts)

    # Posting (without the lock)

    def _flush(self, posts: list[Post]) -> bool:
        """Post the calls to their loops. A closed loop means a lost connection.

        :returns: whether every call was posted.
        """
        lost = post(posts)
        for connection in lost:
            self.close(connection)
        return not lost
