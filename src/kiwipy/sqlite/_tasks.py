"""Task queues on a SQLite file: publishing, this broker's consumers and pulls, claiming
ready tasks for them, and settling what they were given.

Rules:

1. A task is in the file before :meth:`Tasks.publish_many` returns (committed with the
   ``synchronous`` level asked for), and leaves it only on ack or dead-lettering, after its
   reply was stored.
2. Tasks are claimed (``owner`` set) on the pump thread for consumers with room
   (:meth:`Tasks.dispatch`): a queue's only consumer takes a batch at once, several take one
   each in turn. A claimed task whose connection closed meanwhile goes back at once.
3. An ack that cannot be written (e.g. a full disk) is tried again
   (:meth:`Tasks.retry_acks`): until then its task stays taken by this process, neither lost
   nor run again.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from .. import _tracing, exceptions
from ..core._broker import Connection, Consumer, Delivery, Message, Payload
from . import _doorbell
from ._database import Row
from ._local import Connections, Post, encoder, message_values
from ._peers import Peers
from ._store import Store

__all__ = ("Tasks",)

#: Tasks claimed at once for a consumer without a prefetch limit.
_UNLIMITED_BATCH = 64


class Tasks:
    """The task side of one broker; its locks are those of *connections*.

    :param delivery_limit: deliveries after the first past which a task is dead-lettered.
    :param message_ttl: seconds a task sent here may wait in its queue before it is
        dead-lettered (reason ``expired``) instead of started; ``None``: forever.
    """

    def __init__(
        self,
        store: Store,
        connections: Connections,
        peers: Peers,
        delivery_limit: Optional[int],
        message_ttl: Optional[float] = None,
    ) -> None:
        self._table, self._processes = store.tasks, store.processes
        self._connections = connections
        self._lock = connections.lock
        self._peers = peers
        self._delivery_limit = delivery_limit
        self._message_ttl = message_ttl
        self._consumers: dict[str, list[Consumer]] = {}
        self._next_tag = 0
        self._failed_acks: set[int] = set()  # tasks run here whose ack could not be written

    def publish_many(self, queue: str, messages: list[Message]) -> None:
        self._connections.check_open()
        process = self._peers.id
        rows = [message_values(m, process, self._connections.id_of(m.reply_to)) for m in messages]
        if self._message_ttl is not None:
            expires = time.time() + self._message_ttl
            rows = [row[:-1] + (expires,) for row in rows]
        ids = self._table.publish(queue, rows)
        for message, id_ in zip(messages, ids):
            message.seq = id_
        self._ring_all()

    def cancel_task(self, message: Message) -> None:
        self._table.cancel_task(message.seq)

    # Consumers and pulls

    def consume(
        self,
        connection: Connection,
        queue: str,
        prefetch: int,
        callback: Callable[[Delivery], None],
    ) -> Consumer:
        with self._lock:
            Connections.check(connection)
            self._next_tag += 1
            consumer = Consumer(self._next_tag, queue, connection, callback, prefetch)
            connection.consumers.append(consumer)
            self._consumers.setdefault(queue, []).append(consumer)
        self._publish_consumers(queue)
        self._peers.ring_self(_doorbell.TASK)
        return consumer

    def _publish_consumers(self, queue: str) -> None:
        with self._lock:
            count = len(self._consumers.get(queue, ()))
        self._processes.set_consumers(self._peers.id, queue, count)

    def cancel(self, consumer: Consumer) -> None:
        with self._lock:
            if consumer.cancelled:
                return
            consumer.cancelled = True
            consumer.connection.consumers.remove(consumer)
            self._consumers[consumer.queue].remove(consumer)
        self._publish_consumers(consumer.queue)

    def refresh(self, consumer: Consumer) -> None:
        with self._lock:
            self._next_tag += 1
            consumer.tag = self._next_tag
        self._peers.ring_self(_doorbell.TASK)

    def get(
        self, connection: Connection, queue: str, notify: Optional[Callable[[], None]] = None
    ) -> Optional[Delivery]:
        Connections.check(connection)
        conn_id = self._connections.id_of(connection) or 0
        for row in self._table.claim(queue, self._peers.id, conn_id, "", 1):
            delivery = self._delivery(row, connection, None)
            if delivery is not None:
                return delivery
        if notify is not None:
            with self._lock:
                Connections.check(connection)
                connection.waiters.append((queue, notify))
        return None

    def drop(self, connection: Connection) -> set[str]:
        """Cancel the consumers of closing *connection* and settle its deliveries (the lock
        held). :returns: the queues it consumed, for :meth:`release`."""
        queues = {consumer.queue for consumer in connection.consumers}
        for consumer in connection.consumers:
            consumer.cancelled = True
            self._consumers[consumer.queue].remove(consumer)
        connection.consumers.clear()
        for delivery in connection.unsettled:
            delivery.settled = True
        connection.unsettled.clear()
        return queues

    def release(self, conn_id: int, queues: set[str]) -> None:
        """Give back what closed connection *conn_id* consumed and held."""
        for queue in queues:
            self._publish_consumers(queue)
        if self._table.requeue_connection(self._peers.id, conn_id):
            self._ring_all()

    # Deliveries

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

    def _settle(self, delivery: Delivery) -> Optional[bool]:
        """:returns: ``None`` if *delivery* was settled already, else whether its consumer
        was full (so it can take more now)."""
        with self._lock:
            if delivery.settled:
                return None
            delivery.settled = True
            delivery.connection.unsettled.discard(delivery)
            consumer = delivery.consumer
            if consumer is None:
                return False
            full = not consumer.has_room()
            consumer.inflight -= 1
            return full

    def ack(self, delivery: Delivery) -> None:
        full = self._settle(delivery)
        if full is None:
            return
        try:
            self._table.ack(delivery.message.seq, self._peers.id)
        except exceptions.StorageError:
            # e.g. a full disk: the task stays taken by this process; retry_acks tries again
            with self._lock:
                self._failed_acks.add(delivery.message.seq)
            raise
        if full:
            self._peers.ring_self(_doorbell.TASK)

    def retry_acks(self) -> None:
        """Write the acks that failed (rule 3)."""
        with self._lock:
            pending, self._failed_acks = self._failed_acks, set()
        failed = set()
        for task in sorted(pending):
            try:
                self._table.ack(task, self._peers.id)
            except exceptions.StorageError:
                failed.add(task)
        with self._lock:
            self._failed_acks |= failed

    def requeue(self, delivery: Delivery, reject: bool = False) -> None:
        if self._settle(delivery) is None:
            return
        consumer = delivery.consumer
        process = self._peers.id
        rejected_by = f"{process}.{consumer.tag}" if reject and consumer is not None else None
        self._table.requeue(delivery.message.seq, process, rejected_by)
        self._ring_all()

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        full = self._settle(delivery)
        if full is None:
            return
        _tracing.dead_lettered(_tracing.SQLITE, delivery.queue, reason)
        self._table.dead_letter(delivery.message.seq, self._peers.id, reason)
        if full:
            self._peers.ring_self(_doorbell.TASK)

    # Claiming (on the pump thread)

    def dispatch(self) -> None:
        """Claim ready tasks for the local consumers with room (rule 2), and wake the pulls
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
        for consumers in queues.values():
            taken = 0
            while consumers and taken < _UNLIMITED_BATCH:
                for consumer in list(consumers):
                    room = consumer.prefetch - consumer.inflight
                    limit = 1 if len(consumers) > 1 else room
                    if consumer.prefetch <= 0:
                        limit = 1 if len(consumers) > 1 else _UNLIMITED_BATCH
                    claimed = self._claim(consumer, limit, posts)
                    taken += claimed
                    if claimed < limit or not consumer.has_room():
                        consumers.remove(consumer)
            more = more or taken >= _UNLIMITED_BATCH
        self._connections.flush(posts)
        if more:
            self._peers.ring_self(_doorbell.TASK)  # more may be waiting: after the others' work

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

    def _ring_all(self) -> None:
        self._peers.ring_peers(_doorbell.TASK)
        self._peers.ring_self(_doorbell.TASK)
