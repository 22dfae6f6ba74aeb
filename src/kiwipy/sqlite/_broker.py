"""``SqliteBroker``: the :class:`kiwipy.core.Broker` of one process on one SQLite file.

Every process (every broker, strictly) that opens the file is a row of ``processes`` with a
lock file it holds (:mod:`kiwipy.sqlite._files`) and a doorbell (:mod:`._doorbell`). Writes
happen on the caller's thread, in the file (:mod:`._store`), then ring the processes that
must look; each broker's pump thread (:mod:`._pump`) reads what concerns it and posts it to
the receiving loops, as the in-process broker does.

Rules, besides those of :mod:`kiwipy.core._broker`:

1. A task is in the file before :meth:`publish` returns (committed with the ``synchronous``
   level asked for), and leaves it only on ack or dead-lettering, after its reply was stored.
2. RPC requests, replies and broadcasts between connections of this broker are posted
   directly; to other processes they go through the file (they are not durable: RabbitMQ
   does not keep them either).
3. A process that dies, however it dies, releases its lock; the first pump that notices
   gives its tasks back and answers the RPC requests it held with ``lost``.
4. Local state (connections, consumers, unsettled deliveries) is guarded by ``_lock``,
   never held while user code runs or while waiting for a loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import secrets
import socket
import threading
import time
from typing import Any, Callable, NamedTuple, Optional

from .. import _tracing, _unroutable, encoders, exceptions
from .._replies import lost_response
from ..core._broker import Connection, Consumer, Delivery, Message, Payload
from . import _doorbell, _files
from ._doorbell import Doorbell
from ._pump import Pump
from ._store import Row, Store

__all__ = ("Address", "BrokerSettings", "SqliteBroker")

_LOGGER = logging.getLogger(__name__)

#: Tasks claimed at once for a consumer without a prefetch limit.
_UNLIMITED_BATCH = 64

_Post = tuple[Connection, Callable[..., None], tuple[Any, ...]]


class Address(NamedTuple):
    """Where replies go when their requester is in another process."""

    process: int
    conn: int


@dataclasses.dataclass(frozen=True)
class BrokerSettings:
    """What a broker is opened with (brokers in one process are shared per settings)."""

    path: str
    synchronous: str = "full"
    busy_timeout: float = 10.0
    delivery_limit: Optional[int] = None
    liveness_interval: float = 0.25
    safety_poll: float = 2.0


def _encoder(name: str) -> encoders.Encoder:
    try:
        return encoders.get_encoder(name)
    except ValueError:  # a custom encoder: the receiving communicator decodes with its own
        return encoders.YAML


class SqliteBroker:
    """One participant on the SQLite file of *settings*; see the module doc.

    Open it with :meth:`open`; it closes itself when its last connection closes.
    """

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.path = settings.path
        self.store = Store(settings.path, settings.synchronous, settings.busy_timeout)
        self._lock = threading.Lock()
        self._conns: dict[int, Connection] = {}
        self._conn_ids: dict[Connection, int] = {}
        self._next_conn = 0
        self._next_tag = 0
        self._consumers: dict[str, list[Consumer]] = {}
        self._rpc: dict[str, tuple[Connection, Callable[[str, Message], None]]] = {}
        self._peers: dict[int, tuple[str, str]] = {}  # process id -> (doorbell, lock file)
        self._seen_broadcast = 0
        # RPCs sent by datagram: correlation id -> (holder process, connection, encoder,
        # deadline), to answer ``lost`` if the holder dies; and those received by datagram,
        # answered the same way
        self._outstanding: dict[str, tuple[int, Connection, str, Optional[float]]] = {}
        self._lane_requests: dict[str, Optional[float]] = {}  # correlation id -> deadline
        self._failed_acks: set[int] = set()  # tasks run here whose ack could not be written
        self._closed = False
        self.on_empty: Optional[Callable[[SqliteBroker], None]] = None
        self.id = 0
        self._lockfile: Optional[_files.LockFile] = None
        self._doorbell: Optional[Doorbell] = None
        self._pump: Optional[Pump] = None

    def __repr__(self) -> str:
        return f"<SqliteBroker {self.path!r} process {self.id}>"

    def open(self) -> None:
        """Create or open the file, register this process, and start the pump."""
        path = self.path
        self.store.initialise()
        token = secrets.token_hex(8)
        self._lockfile = _files.LockFile.create(_files.sidecar_dir(pathlib.Path(path)), token)
        try:
            self._doorbell = Doorbell(token)
            self.id = self.store.join(
                os.getpid(), socket.gethostname(), token, str(self._lockfile.path)
            )
        except BaseException:
            self._release_files()
            raise
        self._seen_broadcast = self.store.last_broadcast()
        self.refresh_peers()
        self.ring_peers(_doorbell.PEERS)
        self._pump = Pump(self, self._doorbell)
        self._pump.start()

    # Peers

    def refresh_peers(self) -> None:
        """Read the other processes on the file, and release those found dead."""
        rows = self.store.processes()
        peers = {row[0]: (row[3], row[4]) for row in rows if row[0] != self.id}
        with self._lock:
            self._peers = peers
        self.check_peers()

    def check_peers(self) -> None:
        """Release every peer whose lock is free: its process is gone (rule 3)."""
        for process, (_, lock) in list(self._peers.items()):
            if not _files.is_held(pathlib.Path(lock)):
                self.release_process(process, lock)

    def release_process(self, process: int, lock: str) -> None:
        lost = self.store.leave(process)
        with self._lock:
            self._peers.pop(process, None)
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass
        if lost:
            _LOGGER.info("process %d on %s is gone: answering its RPCs", process, self.path)
        for reply_process, reply_conn, correlation_id, _, encoder in lost:
            self._send_lost(Address(reply_process, reply_conn), correlation_id, encoder)
        with self._lock:
            orphans = [(cid, v) for cid, v in self._outstanding.items() if v[0] == process]
            for cid, _ in orphans:
                del self._outstanding[cid]
        for correlation_id, (_, connection, encoder, _) in orphans:
            self._send_lost(connection, correlation_id, encoder)
        self.ring_peers(_doorbell.TASK)
        self.ring_self(_doorbell.TASK)

    def _send_lost(self, address: object, correlation_id: str, encoder: str) -> None:
        reason = "the RPC subscriber's process ended before it answered"
        try:
            body = _encoder(encoder).encode(lost_response(reason))
        except exceptions.KiwiError:
            return
        self.send_reply(address, correlation_id, Payload(body, _encoder(encoder)))

    def ring_peers(self, kind: bytes) -> None:
        gone = False
        for doorbell, _ in list(self._peers.values()):
            if self._doorbell is not None and not self._doorbell.ring(doorbell, kind):
                gone = True
        if gone:
            self.ring_self(_doorbell.PEERS)

    def ring_self(self, kind: bytes) -> None:
        if self._doorbell is not None:
            self._doorbell.ring_self(kind)

    def _ring(self, process: int, kind: bytes) -> None:
        if process == self.id:
            self.ring_self(kind)
            return
        peer = self._peers.get(process)
        if peer is None:
            self.refresh_peers()
            peer = self._peers.get(process)
        if peer is not None and self._doorbell is not None:
            if not self._doorbell.ring(peer[0], kind):
                self.ring_self(_doorbell.PEERS)

    # Connections

    def connect(
        self,
        loop: Any,
        on_reply: Callable[[str, Payload], None],
        on_broadcast: Callable[[Payload], None],
    ) -> Connection:
        connection = Connection(loop, on_reply, on_broadcast)
        with self._lock:
            if self._closed:
                raise exceptions.CommunicatorClosed("the SQLite broker was closed")
            self._next_conn += 1
            self._conns[self._next_conn] = connection
            self._conn_ids[connection] = self._next_conn
        return connection

    def close(self, connection: Connection) -> None:
        posts: list[_Post] = []
        with self._lock:
            if connection.closed:
                return
            connection.closed = True
            conn_id = self._conn_ids.pop(connection)
            del self._conns[conn_id]
            keys = list(connection.rpc)
            for key in keys:
                self._rpc.pop(key, None)
            queues = {consumer.queue for consumer in connection.consumers}
            for consumer in connection.consumers:
                consumer.cancelled = True
                self._consumers[consumer.queue].remove(consumer)
            connection.consumers.clear()
            for delivery in connection.unsettled:
                delivery.settled = True
            connection.unsettled.clear()
            posts.extend((connection, notify, ()) for _, notify in connection.waiters)
            connection.waiters.clear()
            empty = not self._conns
        try:
            for key in keys:
                self.store.unbind(key, self.id)
            for queue in queues:
                self._publish_consumers(queue)
            if self.store.requeue_connection(self.id, conn_id):
                self.ring_peers(_doorbell.TASK)
                self.ring_self(_doorbell.TASK)
        except exceptions.StorageError:
            _LOGGER.exception("could not release a closed connection in %s", self.path)
        self._flush(posts)
        if empty and self.on_empty is not None:
            self.on_empty(self)

    def shutdown(self) -> None:
        """Leave the file: give back everything this process holds and stop the pump."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._pump is not None:
            self._pump.stop()
        try:
            self.store.leave(self.id)
            self.ring_peers(_doorbell.PEERS)
            self.ring_peers(_doorbell.TASK)
        except exceptions.StorageError:
            _LOGGER.exception("could not leave %s cleanly", self.path)
        self._release_files()
        self.store.close()

    def _release_files(self) -> None:
        if self._doorbell is not None:
            self._doorbell.close()
            self._doorbell = None
        if self._lockfile is not None:
            self._lockfile.release()
            self._lockfile = None

    @property
    def closed(self) -> bool:
        return self._closed

    def _conn_id(self, connection: Optional[object]) -> Optional[int]:
        return self._conn_ids.get(connection) if isinstance(connection, Connection) else None

    def _reply_to(self, process: Optional[int], conn: Optional[int]) -> Optional[object]:
        if process is None or conn is None:
            return None
        if process == self.id:
            return self._conns.get(conn, Address(process, conn))
        return Address(process, conn)

    # Task queues

    def _task_values(self, message: Message) -> tuple[Any, ...]:
        payload = message.payload
        if message.cancels is not None:  # a cancel: no body
            body, encoder = b"", "none"
        elif payload.encoder is None or not isinstance(payload.data, (bytes, bytearray)):
            raise TypeError("the SQLite transport stores encoded messages only")
        else:
            body, encoder = bytes(payload.data), payload.encoder.name
        return (
            body,
            encoder,
            payload.headers,
            message.correlation_id,
            self.id if isinstance(message.reply_to, Connection) else None,
            self._conn_id(message.reply_to),
            message.deadline,
            None,
        )

    def publish(self, queue: str, message: Message) -> None:
        self.publish_many(queue, [message])

    def publish_many(self, queue: str, messages: list[Message]) -> None:
        self._check_open()
        ids = self.store.publish(queue, [self._task_values(m) for m in messages])
        for message, id_ in zip(messages, ids):
            message.seq = id_
        self.ring_peers(_doorbell.TASK)
        self.ring_self(_doorbell.TASK)

    def cancel_task(self, queue: str, message: Message) -> None:
        self.store.cancel_task(message.seq)

    def consume(
        self,
        connection: Connection,
        queue: str,
        prefetch: int,
        callback: Callable[[Delivery], None],
    ) -> Consumer:
        with self._lock:
            self._check_connection(connection)
            self._next_tag += 1
            consumer = Consumer(self._next_tag, queue, connection, callback, prefetch)
            connection.consumers.append(consumer)
            self._consumers.setdefault(queue, []).append(consumer)
        self._publish_consumers(queue)
        self.ring_self(_doorbell.TASK)
        return consumer

    def _publish_consumers(self, queue: str) -> None:
        with self._lock:
            count = len(self._consumers.get(queue, ()))
        self.store.set_consumers(self.id, queue, count)

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
        self.ring_self(_doorbell.TASK)

    def get(
        self, connection: Connection, queue: str, notify: Optional[Callable[[], None]] = None
    ) -> Optional[Delivery]:
        self._check_connection(connection)
        conn_id = self._conn_ids.get(connection, 0)
        for row in self.store.claim(queue, self.id, conn_id, "", 1):
            delivery = self._delivery(row, connection, None)
            if delivery is not None:
                return delivery
        if notify is not None:
            with self._lock:
                self._check_connection(connection)
                connection.waiters.append((queue, notify))
        return None

    def forget_waiter(self, connection: Connection, notify: Callable[[], None]) -> None:
        with self._lock:
            connection.waiters[:] = [w for w in connection.waiters if w[1] is not notify]

    def _delivery(
        self, row: Row, connection: Connection, consumer: Optional[Consumer]
    ) -> Optional[Delivery]:
        """:returns: the delivery of a claimed *row*, or ``None`` if it went to the dead
        letters (past the delivery limit) or back (its connection closed meanwhile)."""
        limit = self.settings.delivery_limit
        if limit is not None and row.deliveries > limit + 1:
            self.store.dead_letter(row.id, self.id, "delivery_limit")
            _tracing.dead_lettered(_tracing.SQLITE, row.queue, "delivery_limit")
            return None
        payload = Payload(row.body, _encoder(row.encoder), row.headers)
        message = Message(
            payload,
            row.correlation_id,
            self._reply_to(row.reply_process, row.reply_conn),
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
        self.store.requeue(row.id, self.id)
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
            self.store.ack(delivery.message.seq, self.id)
        except exceptions.StorageError:
            # e.g. a full disk: the task stays taken by this process; retry_acks tries again
            with self._lock:
                self._failed_acks.add(delivery.message.seq)
            raise
        if full:
            self.ring_self(_doorbell.TASK)

    def retry_acks(self) -> None:
        """Write the acks that failed (rule 1): until one is written its task stays taken
        by this process, neither lost nor run again, and would stay so as long as it lives."""
        with self._lock:
            pending, self._failed_acks = self._failed_acks, set()
        failed = set()
        for task in sorted(pending):
            try:
                self.store.ack(task, self.id)
            except exceptions.StorageError:
                failed.add(task)
        with self._lock:
            self._failed_acks |= failed

    def requeue(self, delivery: Delivery, reject: bool = False) -> None:
        if self._settle(delivery) is None:
            return
        consumer = delivery.consumer
        rejected_by = f"{self.id}.{consumer.tag}" if reject and consumer is not None else None
        self.store.requeue(delivery.message.seq, self.id, rejected_by)
        self.ring_peers(_doorbell.TASK)
        self.ring_self(_doorbell.TASK)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        full = self._settle(delivery)
        if full is None:
            return
        _tracing.dead_lettered(_tracing.SQLITE, delivery.queue, reason)
        self.store.dead_letter(delivery.message.seq, self.id, reason)
        if full:
            self.ring_self(_doorbell.TASK)

    def queue_stats(self, queue: str) -> tuple[int, int]:
        ready, unsettled, _, _ = self.store.queue_stats(queue)[queue]
        return ready, unsettled

    def dead_letters(self, queue: str) -> list[tuple[Any, str]]:
        return [(letter.body, letter.reason) for letter in self.store.dead_letters(queue)]

    # RPC, replies and broadcasts

    def bind_rpc(
        self, connection: Connection, key: str, callback: Callable[[str, Message], None]
    ) -> None:
        self._check_connection(connection)
        conn_id = self._conn_ids.get(connection, 0)
        holder = self.store.bind(key, self.id, conn_id)
        if holder is not None and holder != self.id and not self._alive(holder):
            holder = self.store.bind(key, self.id, conn_id)
        if holder is not None:
            raise exceptions.DuplicateSubscriberIdentifier(f"RPC identifier '{key}'")
        with self._lock:
            self._rpc[key] = (connection, callback)
            connection.rpc[key] = callback

    def _alive(self, process: int) -> bool:
        """:returns: whether *process* lives; a dead one is released at once."""
        peer = self._peers.get(process)
        if peer is None:
            self.refresh_peers()
            peer = self._peers.get(process)
            if peer is None:
                return False
        if _files.is_held(pathlib.Path(peer[1])):
            return True
        self.release_process(process, peer[1])
        return False

    def unbind_rpc(self, connection: Connection, key: str) -> None:
        with self._lock:
            if connection.rpc.pop(key, None) is None:
                return
            self._rpc.pop(key, None)
        self.store.unbind(key, self.id)

    def send_rpc(self, key: str, message: Message) -> None:
        self._check_open()
        local = self._rpc.get(key)
        if local is not None:
            connection, callback = local
            if self._flush([(connection, callback, (key, message))]):
                return
        holder = self.store.holder(key)
        if holder is None or holder == self.id or not self._alive(holder):
            raise exceptions.UnroutableError(_unroutable.no_rpc_subscriber(key))
        values = self._task_values(message)[:-1] + (message.cancels,)
        if self._send_lane(holder, key, values, message.reply_to):
            return
        if not self.store.send_request(holder, key, values):
            raise exceptions.UnroutableError(_unroutable.no_rpc_subscriber(key))
        self._ring(holder, _doorbell.RPC)

    def _send_lane(self, holder: int, key: str, values: tuple[Any, ...], reply_to: object) -> bool:
        """Send an RPC request by datagram (:mod:`._doorbell`). :returns: whether it went."""
        body, encoder, headers, cid, reply_process, reply_conn, deadline, cancels = values
        peer = self._peers.get(holder)
        if peer is None or self._doorbell is None:
            return False
        header = {"k": key, "c": cid, "p": reply_process, "n": reply_conn, "d": deadline,
                  "e": encoder, "h": headers, "x": cancels}  # fmt: skip
        if isinstance(reply_to, Connection):
            with self._lock:
                self._outstanding[cid] = (holder, reply_to, encoder, deadline)
        if self._doorbell.send(peer[0], _doorbell.REQUEST, header, body):
            return True
        with self._lock:
            self._outstanding.pop(cid, None)
        return False

    def send_reply(
        self, reply_to: object, correlation_id: str, payload: Payload, final: bool = True
    ) -> None:
        if isinstance(reply_to, Connection):
            if not reply_to.closed:
                self._flush([(reply_to, reply_to.on_reply, (correlation_id, payload))])
            return
        if not isinstance(reply_to, Address):
            return
        if reply_to.process == self.id:
            connection = self._conns.get(reply_to.conn)
            if connection is not None:
                self._flush([(connection, connection.on_reply, (correlation_id, payload))])
            return
        assert payload.encoder is not None
        values = (
            reply_to.process,
            reply_to.conn,
            correlation_id,
            bytes(payload.data),
            payload.encoder.name,
            payload.headers,
        )
        if correlation_id in self._lane_requests:
            if final:
                self._lane_requests.pop(correlation_id, None)
            peer = self._peers.get(reply_to.process)
            header = {"n": reply_to.conn, "c": correlation_id, "e": values[4], "h": values[5],
                      "f": final}  # fmt: skip
            if (
                peer is not None
                and self._doorbell is not None
                and self._doorbell.send(peer[0], _doorbell.ANSWER, header, values[3])
            ):
                return
        answered = (self.id, correlation_id) if final else None
        if self.store.reply(values, answered):
            self._ring(reply_to.process, _doorbell.REPLY)

    def broadcast(self, payload: Payload) -> None:
        self._check_open()
        assert payload.encoder is not None
        self.store.broadcast(self.id, bytes(payload.data), payload.encoder.name, payload.headers)
        self.ring_peers(_doorbell.BROADCAST)
        with self._lock:
            posts = [(c, c.on_broadcast, (payload,)) for c in self._conns.values()]
        self._flush(posts)

    # Called by the pump thread

    def pump(self, kinds: set[bytes]) -> None:
        """Do the work the doorbell rang for."""
        if _doorbell.PEERS in kinds:
            self.refresh_peers()
        if _doorbell.REPLY in kinds:
            self._take_replies()
        if _doorbell.RPC in kinds:
            self._take_requests()
        if _doorbell.BROADCAST in kinds:
            self._take_broadcasts()
        if _doorbell.TASK in kinds:
            self._dispatch_tasks()

    def receive(self, messages: list[tuple[bytes, dict[str, Any], bytes]]) -> None:
        """Post the RPC requests and replies that came by datagram."""
        posts: list[_Post] = []
        for kind, header, body in messages:
            payload = Payload(body, _encoder(header["e"]), header.get("h"))
            correlation_id = header["c"]
            if kind == _doorbell.ANSWER:
                connection = self._conns.get(header["n"])
                if header.get("f", True):
                    with self._lock:
                        self._outstanding.pop(correlation_id, None)
                if connection is not None:
                    posts.append((connection, connection.on_reply, (correlation_id, payload)))
                continue
            key = header["k"]
            message = Message(
                payload,
                correlation_id,
                self._reply_to(header["p"], header["n"]),
                deadline=header["d"],
                cancels=header["x"],
            )
            local = self._rpc.get(key)
            if header["x"] is None and isinstance(message.reply_to, Address):
                self._lane_requests[correlation_id] = header["d"]
            if local is not None:
                posts.append((local[0], local[1], (key, message)))
            elif header["x"] is None and message.reply_to is not None:
                self._send_lost_response(message.reply_to, correlation_id, header["e"], key)
        self._flush(posts)

    def _send_lost_response(
        self, reply_to: object, correlation_id: str, encoder: str, key: str
    ) -> None:
        body = _encoder(encoder).encode(lost_response(f"the RPC subscriber '{key}' is gone"))
        self.send_reply(reply_to, correlation_id, Payload(body, _encoder(encoder)))

    def prune(self) -> None:
        """Forget datagram RPCs whose deadline passed (their callers gave up)."""
        now = time.time()
        with self._lock:
            for cid, (_, _, _, deadline) in list(self._outstanding.items()):
                if deadline is not None and deadline < now:
                    del self._outstanding[cid]
            for cid, deadline in list(self._lane_requests.items()):
                if deadline is not None and deadline < now:
                    del self._lane_requests[cid]

    def _take_replies(self) -> None:
        posts: list[_Post] = []
        for _, conn_id, correlation_id, body, encoder, headers in self.store.take_replies(self.id):
            with self._lock:
                self._outstanding.pop(correlation_id, None)
            connection = self._conns.get(conn_id)
            if connection is not None:
                payload = Payload(body, _encoder(encoder), headers)
                posts.append((connection, connection.on_reply, (correlation_id, payload)))
        self._flush(posts)

    def _take_requests(self) -> None:
        posts: list[_Post] = []
        for row in self.store.take_requests(self.id):
            local = self._rpc.get(row.queue)
            message = Message(
                Payload(row.body, _encoder(row.encoder), row.headers),
                row.correlation_id,
                self._reply_to(row.reply_process, row.reply_conn),
                seq=row.id,
                deadline=row.deadline,
                cancels=row.cancels,
            )
            if local is not None:
                posts.append((local[0], local[1], (row.queue, message)))
            elif row.cancels is None and message.reply_to is not None:
                self._send_lost_response(
                    message.reply_to, row.correlation_id, row.encoder, row.queue
                )
        self._flush(posts)

    def _take_broadcasts(self) -> None:
        rows = self.store.broadcasts_after(self._seen_broadcast)
        if not rows:
            return
        self._seen_broadcast = rows[-1][0]
        with self._lock:
            conns = list(self._conns.values())
        posts: list[_Post] = []
        for _, origin, body, encoder, headers in rows:
            if origin == self.id:
                continue  # posted to this broker's connections when sent
            payload = Payload(body, _encoder(encoder), headers)
            posts.extend((c, c.on_broadcast, (payload,)) for c in conns)
        self._flush(posts)
        self.store.mark_seen(self.id, self._seen_broadcast)

    def _dispatch_tasks(self) -> None:
        """Claim ready tasks for the local consumers with room: a queue's only consumer takes
        a batch at once, several take one each in turn (round robin)."""
        posts: list[_Post] = []
        with self._lock:
            queues = {}
            for queue, consumers in self._consumers.items():
                if len(consumers) > 1:  # round robin: the next one starts the next time
                    consumers.append(consumers.pop(0))
                queues[queue] = [consumer for consumer in consumers if consumer.has_room()]
            for connection in self._conns.values():
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
        self._flush(posts)
        if more:
            self.ring_self(_doorbell.TASK)  # more may be waiting: after the others' work

    def _claim(self, consumer: Consumer, limit: int, posts: list[_Post]) -> int:
        """Claim up to *limit* tasks for *consumer*. :returns: how many rows it took."""
        connection = consumer.connection
        conn_id = self._conn_ids.get(connection)
        if conn_id is None or consumer.cancelled or limit <= 0:
            return 0
        key = f"{self.id}.{consumer.tag}"
        rows = self.store.claim(consumer.queue, self.id, conn_id, key, limit)
        for row in rows:
            delivery = self._delivery(row, connection, consumer)
            if delivery is not None:
                posts.append((connection, consumer.callback, (delivery,)))
        return len(rows)

    # Helpers

    def _check_open(self) -> None:
        if self._closed:
            raise exceptions.CommunicatorClosed("the SQLite broker was closed")

    @staticmethod
    def _check_connection(connection: Connection) -> None:
        if connection.closed:
            raise exceptions.CommunicatorClosed

    def _flush(self, posts: list[_Post]) -> bool:
        lost: list[Connection] = []
        for connection, fn, args in posts:
            try:
                connection.loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop is closed: its communicator is gone
                lost.append(connection)
        for connection in lost:
            self.close(connection)
        return not lost
