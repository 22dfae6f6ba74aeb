"""Claiming ready tasks on a SQLite file for this broker's consumers and pulls, and making
each claimed row a delivery (rule 2 of :mod:`._tasks`).

A queue's only consumer takes a batch at once, several take one each in turn. A consumer
without a prefetch limit takes one task per wake-up while other processes consume its queue
too (they are rung at the same time: the tasks are shared among them), a batch otherwise. A row past the
delivery limit or its time to live goes to the dead letters instead; one whose connection
closed meanwhile goes back at once.
"""

from __future__ import annotations

import time
from typing import Optional

from .. import _tracing
from ..core._broker import Connection, Consumer, Delivery, Message, Payload, Post
from . import _doorbell
from ._database import Row
from ._local import Connections, encoder
from ._peers import Peers
from ._tables import ProcessTable
from ._task_tables import TaskTable

__all__ = ("Claims",)

#: Tasks claimed at once for a consumer without a prefetch limit.
_UNLIMITED_BATCH = 64
#: Seconds the number of processes consuming a queue is remembered.
_SHARING_FOR = 1.0


class Claims:
    """The claiming side of :class:`._tasks.Tasks`; its locks are those of *connections*.

    :param consumers: the broker's consumers by queue, shared with :class:`._tasks.Tasks`
        (which adds and removes them) and read under the lock.
    :param delivery_limit: deliveries after the first past which a task is dead-lettered.
    """

    def __init__(
        self,
        table: TaskTable,
        connections: Connections,
        peers: Peers,
        delivery_limit: Optional[int],
        consumers: dict[str, list[Consumer]],
        processes: ProcessTable,
    ) -> None:
        self._table = table
        self._connections = connections
        self._lock = connections.lock
        self._peers = peers
        self._delivery_limit = delivery_limit
        self._consumers = consumers
        self._processes = processes
        self._sharing: dict[str, tuple[float, int]] = {}  # queue -> (when read, processes)

    def pull(self, connection: Connection, queue: str) -> Optional[Delivery]:
        """Claim one task of *queue* for a pull on *connection*. :returns: its delivery, or
        ``None`` if none was ready (or the one claimed did not become a delivery)."""
        conn_id = self._connections.id_of(connection) or 0
        for row in self._table.claim(queue, self._peers.id, conn_id, "", 1):
            delivery = self._delivery(row, connection, None)
            if delivery is not None:
                return delivery
        return None

    # On the pump thread

    def dispatch(self) -> None:
        """Claim ready tasks for the local consumers with room, and wake the pulls
        waiting for a task."""
        posts: list[Post] = []
        with self._lock:
            queues = {}
            for queue, consumers in self._consumers.items():
                if len(consumers) > 1:  # round robin: the next one starts the next time
                    consumers.append(consumers.pop(0))
                queues[queue] = [consumer for consumer in consumers if consumer.has_room()]
            for connection in self._connections.all():
                posts.extend((connection, notify, ()) for _, notify in connection.waiters)
                connection.waiters.clear()
        more = False
        for queue, consumers in queues.items():
            taken = 0
            batch = _UNLIMITED_BATCH if consumers and self._alone(queue) else 1
            while consumers and taken < batch:
                for consumer in list(consumers):
                    room = consumer.prefetch - consumer.inflight
                    limit = 1 if len(consumers) > 1 else room
                    if consumer.prefetch <= 0:
                        limit = 1 if len(consumers) > 1 else batch
                    claimed = self._claim(consumer, limit, posts)
                    taken += claimed
                    if claimed < limit or not consumer.has_room():
                        consumers.remove(consumer)
            more = more or taken >= batch
        self._connections.flush(posts)
        if more:
            self._peers.ring_self(_doorbell.TASK)  # more may be waiting: after the others' work

    def _alone(self, queue: str) -> bool:
        """:returns: whether this is the only process consuming *queue* (read again from the
        file at most once a second)."""
        now = time.monotonic()
        read = self._sharing.get(queue)
        if read is None or now - read[0] > _SHARING_FOR:
            read = self._sharing[queue] = (now, self._processes.consuming(queue))
        return read[1] <= 1

    def _claim(self, consumer: Consumer, limit: int, posts: list[Post]) -> int:
        """Claim up to *limit* tasks for *consumer*. :returns: how many rows it took."""
        connection = consumer.connection
        conn_id = self._connections.id_of(connection)
        if conn_id is None or consumer.cancelled or limit <= 0:
            return 0
        key = f"{self._peers.id}.{consumer.tag}"
        rows = self._table.claim(consumer.queue, self._peers.id, conn_id, key, limit)
        for row in rows:
            delivery = self._delivery(row, connection, consumer)
            if delivery is not None:
                posts.append((connection, consumer.callback, (delivery,)))
        return len(rows)

    def _delivery(
        self, row: Row, connection: Connection, consumer: Optional[Consumer]
    ) -> Optional[Delivery]:
        """:returns: the delivery of a claimed *row*, or ``None`` if it went to the dead
        letters (past the delivery limit) or back (its connection closed meanwhile)."""
        limit = self._delivery_limit
        if limit is not None and row.deliveries > limit + 1:
            self._table.dead_letter(row.id, self._peers.id, "delivery_limit")
            _tracing.dead_lettered(_tracing.SQLITE, row.queue, "delivery_limit")
            return None
        if row.expires is not None and time.time() >= row.expires:
            self._table.dead_letter(row.id, self._peers.id, "expired")
            _tracing.dead_lettered(_tracing.SQLITE, row.queue, "expired")
            return None
        message = Message(
            Payload(row.body, encoder(row.encoder), row.headers),
            row.correlation_id,
            self._connections.reply_to(self._peers.id, row.reply_process, row.reply_conn),
            seq=row.id,
            redelivered=row.deliveries > 1,
            deadline=row.deadline,
            cancelled=row.cancelled,
        )
        delivery = Delivery(message, row.queue, connection, consumer)
        with self._lock:
            if not connection.closed and (consumer is None or not consumer.cancelled):
                connection.unsettled.add(delivery)
                if consumer is not None:
                    consumer.inflight += 1
                return delivery
        self._table.requeue(row.id, self._peers.id)
        return None
