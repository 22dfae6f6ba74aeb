"""Task queues on a SQLite file: publishing, this broker's consumers and pulls, and settling
what they were given; claiming ready tasks for them is :mod:`._claims`'.

Rules:

1. A task is in the file before :meth:`Tasks.publish_many` returns (committed with the
   ``synchronous`` level asked for), and leaves it only on ack or dead-lettering, after its
   reply was stored.
2. Tasks are claimed (``owner`` set) on the pump thread for consumers with room
   (:meth:`Tasks.dispatch`, :meth:`._claims.Claims.dispatch`): a queue's only consumer takes
   a batch at once, several take one each in turn. A claimed task whose connection closed
   meanwhile goes back at once.
3. Acks are written by the pump thread, all those waiting in one transaction
   (:meth:`Tasks.write_acks`), and before a closing connection's tasks are given back. An
   ack not written yet, or that cannot be (e.g. a full disk: it is tried again at every
   wake-up of the pump), leaves its task taken by this process, neither lost nor run again
   while the process lives; a process that dies before writing it has the task redelivered.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from .. import _tracing, exceptions
from ..core._broker import Connection, Consumer, Delivery, Message
from . import _doorbell
from ._claims import Claims
from ._local import Connections, message_values
from ._peers import Peers
from ._store import Store

__all__ = ("Tasks",)

_LOGGER = logging.getLogger(__name__)


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
        self._message_ttl = message_ttl
        self._consumers: dict[str, list[Consumer]] = {}
        self._claims = Claims(
            self._table, connections, peers, delivery_limit, self._consumers, self._processes
        )
        self._next_tag = 0
        self._acks: set[int] = set()  # tasks settled here whose ack is not written yet
        self._writing_acks = threading.Lock()  # held while acks are written (rule 3)

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
        self._ring_all(queue)

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
        if notify is not None:  # waiting before looking: a task queued meanwhile rings it
            with self._lock:
                Connections.check(connection)
                connection.waiters.append((queue, notify))
        delivery = self._claims.pull(connection, queue)
        if delivery is not None and notify is not None:
            with self._lock:
                if (queue, notify) in connection.waiters:
                    connection.waiters.remove((queue, notify))
        return delivery

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
        """Give back what closed connection *conn_id* consumed and held (its acks first)."""
        for queue in queues:
            self._publish_consumers(queue)
        with self._writing_acks:  # every ack taken for writing before this one is written
            self._write_acks()
            requeued = self._table.requeue_connection(self._peers.id, conn_id)
        if requeued:
            self._ring_all()

    # Settling

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
        """Settle *delivery* as done; the pump writes the ack (rule 3)."""
        full = self._settle(delivery)
        if full is None:
            return
        with self._lock:
            first = not self._acks
            self._acks.add(delivery.message.seq)
        if first or full:
            self._peers.ring_self(_doorbell.TASK)

    def write_acks(self) -> None:
        """Write the acks waiting, in one transaction (rule 3); those that cannot be written
        wait for the next call (a warning says why)."""
        with self._writing_acks:
            try:
                self._write_acks()
            except exceptions.StorageError as exc:
                _LOGGER.warning("could not write acks (retrying at the next wake-up): %s", exc)

    def _write_acks(self) -> None:
        with self._lock:
            pending, self._acks = self._acks, set()
        if not pending:
            return
        try:
            self._table.ack(sorted(pending), self._peers.id)
        except exceptions.StorageError:
            with self._lock:
                self._acks |= pending
            raise

    def requeue(self, delivery: Delivery, reject: bool = False) -> None:
        if self._settle(delivery) is None:
            return
        consumer = delivery.consumer
        process = self._peers.id
        rejected_by = f"{process}.{consumer.tag}" if reject and consumer is not None else None
        self._table.requeue(delivery.message.seq, process, rejected_by)
        self._ring_all(delivery.queue)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        full = self._settle(delivery)
        if full is None:
            return
        _tracing.dead_lettered(_tracing.SQLITE, delivery.queue, reason)
        self._table.dead_letter(delivery.message.seq, self._peers.id, reason)
        if full:
            self._peers.ring_self(_doorbell.TASK)

    def dispatch(self) -> None:
        """Claim ready tasks for the local consumers with room (rule 2), and wake the pulls
        waiting for a task (on the pump thread)."""
        self._claims.dispatch()

    def _ring_all(self, queue: Optional[str] = None) -> None:
        """Ring every peer, and this process's pump if it has a consumer or a pull waiting
        for *queue* (``None``: any queue) to claim for."""
        self._peers.ring_peers(_doorbell.TASK)
        with self._lock:
            wanted = any(
                consumers for name, consumers in self._consumers.items() if queue in (None, name)
            ) or any(
                queue in (None, name)
                for connection in self._connections.all()
                for name, _ in connection.waiters
            )
        if wanted:
            self._peers.ring_self(_doorbell.TASK)
