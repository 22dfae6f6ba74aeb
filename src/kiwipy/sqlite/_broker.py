"""``SqliteBroker``: the :class:`kiwipy.core.Broker` of one process on one SQLite file.

Every process (every broker, strictly) that opens the file is a row of ``processes`` with a
lock file it holds (:mod:`._lockfile`) and a doorbell (:mod:`._doorbell`). Writes
happen on the caller's thread, in the file (:mod:`._store`), then ring the processes that
must look; each broker's pump thread (:mod:`._pump`) reads what concerns it and posts it to
the receiving loops, as the in-process broker does.

The broker is a facade over its components, each with its rules: its connections
(:mod:`._local`), the other processes (:mod:`._peers`), task queues (:mod:`._tasks`), RPC
(:mod:`._rpc`) and broadcasts (:mod:`._broadcasts`). Rules, besides those of
:mod:`kiwipy.core._broker` and of the components:

1. A connection closing gives back everything it held (its RPC identifiers, consumers and
   claimed tasks); the broker closes itself (:attr:`SqliteBroker.on_empty`) when its last
   connection closes.
2. :meth:`SqliteBroker.shutdown` leaves the file: every other process is rung to take over
   the tasks and RPCs it held.
3. Local state is guarded by one lock (:attr:`._local.Connections.lock`), never held while
   user code runs or while waiting for a loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import secrets
import socket
from typing import Any, Callable, Optional

from .. import exceptions
from ..core._broker import Connection, Consumer, Delivery, Message, Payload, Post
from . import _doorbell, _files
from ._broadcasts import Broadcasts
from ._doorbell import Doorbell
from ._local import Address, Connections
from ._lockfile import LockFile
from ._peers import Peers
from ._pump import Pump
from ._rpc import Rpc
from ._store import Store
from ._tasks import Tasks

__all__ = ("Address", "BrokerSettings", "SqliteBroker")

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BrokerSettings:
    """What a broker is opened with (brokers in one process are shared per settings)."""

    path: str
    synchronous: str = "full"
    busy_timeout: float = 10.0
    delivery_limit: Optional[int] = None
    message_ttl: Optional[float] = None  # seconds a task may wait in its queue
    liveness_interval: float = 0.25
    safety_poll: float = 2.0


class SqliteBroker:
    """One participant on the SQLite file of *settings*; see the module doc.

    Open it with :meth:`open`; it closes itself when its last connection closes.
    """

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.path = settings.path
        self.store = Store(settings.path, settings.synchronous, settings.busy_timeout)
        self.on_empty: Optional[Callable[[SqliteBroker], None]] = None
        self._connections = Connections(on_lost=self.close)
        self._peers = Peers(self.store.processes, self.path, self._connections.lock)
        self._rpc = Rpc(self.store.rpc, self._connections, self._peers)
        self._peers.handler = self._rpc
        self._broadcasts = Broadcasts(self.store.broadcasts, self._connections, self._peers)
        self._tasks = Tasks(
            self.store,
            self._connections,
            self._peers,
            settings.delivery_limit,
            settings.message_ttl,
        )
        self._lockfile: Optional[LockFile] = None
        self._pump: Optional[Pump] = None

    def __repr__(self) -> str:
        return f"<SqliteBroker {self.path!r} process {self.id}>"

    @property
    def id(self) -> int:
        """This process's row in the file (0 until :meth:`open`)."""
        return self._peers.id

    @property
    def closed(self) -> bool:
        return self._connections.closed

    def open(self) -> None:
        """Create or open the file, register this process, and start the pump."""
        self.store.initialise()
        token = secrets.token_hex(8)
        self._lockfile = LockFile.create(_files.sidecar_dir(pathlib.Path(self.path)), token)
        try:
            doorbell = self._peers.doorbell = Doorbell(token)
            self._peers.id = self.store.processes.join(
                os.getpid(), socket.gethostname(), token, str(self._lockfile.path)
            )
        except BaseException:
            self._release_files()
            raise
        self._broadcasts.start()
        self._peers.refresh()
        self._peers.ring_peers(_doorbell.PEERS)
        self._pump = Pump(self, doorbell)
        self._pump.start()

    def shutdown(self) -> None:
        """Leave the file (rule 2) and stop the pump."""
        with self._connections.lock:
            if self._connections.closed:
                return
            self._connections.closed = True
        if self._pump is not None:
            self._pump.stop()
        try:
            self._tasks.write_acks()
            self.store.processes.leave(self.id)
            self._peers.ring_peers(_doorbell.PEERS)
            self._peers.ring_peers(_doorbell.TASK)
        except exceptions.StorageError:
            _LOGGER.exception("could not leave %s cleanly", self.path)
        self._release_files()
        self.store.close()

    def _release_files(self) -> None:
        if self._peers.doorbell is not None:
            self._peers.doorbell.close()
            self._peers.doorbell = None
        if self._lockfile is not None:
            self._lockfile.release()
            self._lockfile = None

    # Connections

    def connect(
        self,
        loop: Any,
        on_reply: Callable[[str, Payload], None],
        on_broadcast: Callable[[Payload], None],
    ) -> Connection:
        connection = Connection(loop, on_reply, on_broadcast)
        self._connections.add(connection)
        return connection

    def close(self, connection: Connection) -> None:
        """Close *connection* and give back what it held (rule 1)."""
        posts: list[Post] = []
        with self._connections.lock:
            if connection.closed:
                return
            connection.closed = True
            conn_id, empty = self._connections.remove(connection)
            keys = self._rpc.drop(connection)
            queues = self._tasks.drop(connection)
            posts.extend((connection, notify, ()) for _, notify in connection.waiters)
            connection.waiters.clear()
        try:
            self._rpc.unbind_all(keys)
            self._tasks.release(conn_id, queues)
        except exceptions.StorageError:
            _LOGGER.exception("could not release a closed connection in %s", self.path)
        self._connections.flush(posts)
        if empty and self.on_empty is not None:
            self.on_empty(self)

    # Task queues (:mod:`._tasks`)

    def publish(self, queue: str, message: Message) -> None:
        self._tasks.publish_many(queue, [message])

    def publish_many(self, queue: str, messages: list[Message]) -> None:
        self._tasks.publish_many(queue, messages)

    def cancel_task(self, queue: str, message: Message) -> None:
        self._tasks.cancel_task(message)

    def consume(
        self,
        connection: Connection,
        queue: str,
        prefetch: int,
        callback: Callable[[Delivery], None],
    ) -> Consumer:
        return self._tasks.consume(connection, queue, prefetch, callback)

    def cancel(self, consumer: Consumer) -> None:
        self._tasks.cancel(consumer)

    def refresh(self, consumer: Consumer) -> None:
        self._tasks.refresh(consumer)

    def get(
        self, connection: Connection, queue: str, notify: Optional[Callable[[], None]] = None
    ) -> Optional[Delivery]:
        return self._tasks.get(connection, queue, notify)

    def forget_waiter(self, connection: Connection, notify: Callable[[], None]) -> None:
        with self._connections.lock:
            connection.waiters[:] = [w for w in connection.waiters if w[1] is not notify]

    def ack(self, delivery: Delivery) -> None:
        self._tasks.ack(delivery)

    def requeue(self, delivery: Delivery, reject: bool = False) -> None:
        self._tasks.requeue(delivery, reject)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._tasks.dead_letter(delivery, reason)

    def queue_stats(self, queue: str) -> tuple[int, int]:
        self._tasks.write_acks()  # as the other brokers count: acked tasks are gone
        ready, unsettled, _, _ = self.store.queues.queue_stats(queue)[queue]
        return ready, unsettled

    def dead_letters(self, queue: str) -> list[tuple[Any, str]]:
        return [(letter.body, letter.reason) for letter in self.store.queues.dead_letters(queue)]

    # RPC and broadcasts (:mod:`._rpc`, :mod:`._broadcasts`)

    def bind_rpc(
        self, connection: Connection, key: str, callback: Callable[[str, Message], None]
    ) -> None:
        self._rpc.bind(connection, key, callback)

    def unbind_rpc(self, connection: Connection, key: str) -> None:
        self._rpc.unbind(connection, key)

    def send_rpc(self, key: str, message: Message) -> None:
        self._rpc.send_rpc(key, message)

    def send_reply(
        self, reply_to: object, correlation_id: str, payload: Payload, final: bool = True
    ) -> None:
        self._rpc.send_reply(reply_to, correlation_id, payload, final)

    def broadcast(self, payload: Payload) -> None:
        self._broadcasts.broadcast(payload)

    # Called by the pump thread (:class:`._pump.PumpHost`)

    def check_peers(self) -> None:
        """Release every peer whose lock is free: its process is gone."""
        self._peers.check()

    def write_acks(self) -> None:
        self._tasks.write_acks()

    def prune(self) -> None:
        self._rpc.prune()

    def receive(self, messages: list[tuple[bytes, dict[str, Any], bytes]]) -> None:
        """Post the RPC requests, replies and broadcasts that came by datagram."""
        rpc = [message for message in messages if message[0] != _doorbell.ANNOUNCE]
        if rpc:
            self._rpc.receive(rpc)
        posts = [
            post
            for kind, header, body in messages
            if kind == _doorbell.ANNOUNCE
            for post in self._broadcasts.receive(header, body)
        ]
        self._connections.flush(posts)

    def pump(self, kinds: set[bytes]) -> None:
        """Do the work the doorbell rang for, after writing the acks waiting."""
        self._tasks.write_acks()
        if _doorbell.PEERS in kinds:
            self._peers.refresh()
        if _doorbell.REPLY in kinds:
            self._rpc.take_replies()
        if _doorbell.RPC in kinds:
            self._rpc.take_requests()
        if _doorbell.BROADCAST in kinds:
            self._broadcasts.take()
        if _doorbell.TASK in kinds:
            self._tasks.dispatch()
