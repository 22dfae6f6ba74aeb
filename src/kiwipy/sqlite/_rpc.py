"""RPC between the processes on a SQLite file: the bindings of this broker's subscribers,
sending requests and replies, and receiving them.

Rules:

1. A request to a subscriber of this broker is posted directly to its loop. To another
   process it goes as a datagram on its doorbell (:mod:`._doorbell`, the *lane*) when it
   fits, else through the ``rpc_requests`` table. Neither is durable: RabbitMQ does not keep
   RPCs either.
2. A reply to a request taken from the ``rpc_requests`` table goes back through the
   ``replies`` table (storing the final one deletes the request in the same transaction).
   Every other reply (to a task, or to a request that came by datagram) goes as a datagram
   when it fits and the requester's doorbell takes it, else through the table: either way it
   is in the requester's hands before the task it answers is acknowledged.
3. Every RPC in flight whose holder dies is answered ``lost`` (the caller gets
   :class:`~kiwipy.ReplyLost`): those it held in the file by whoever releases it
   (:meth:`Rpc.process_gone`), those sent to it by datagram by their sender, which keeps
   them until answered or past their deadline (:meth:`Rpc.prune`).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from .. import _unroutable, exceptions
from .._replies import lost_response
from ..core._broker import Connection, Message, Payload, Post
from . import _doorbell
from ._local import Address, Connections, encoder, message_values
from ._peers import Peers
from ._tables import RpcTables

__all__ = ("Rpc",)


class Rpc:
    """The RPC side of one broker; its locks are those of *connections*."""

    def __init__(self, table: RpcTables, connections: Connections, peers: Peers) -> None:
        self._table = table
        self._connections = connections
        self._lock = connections.lock
        self._peers = peers
        self._bound: dict[str, tuple[Connection, Callable[[str, Message], None]]] = {}
        # RPCs sent by datagram: correlation id -> (holder process, connection, encoder,
        # deadline), to answer ``lost`` if the holder dies; and those received by datagram,
        # answered the same way
        self._outstanding: dict[str, tuple[int, Connection, str, Optional[float]]] = {}
        # RPC requests taken from the file (too large for a datagram): answered through the
        # file, deleting the request (correlation id -> deadline)
        self._db_requests: dict[str, Optional[float]] = {}

    # Bindings

    def bind(
        self, connection: Connection, key: str, callback: Callable[[str, Message], None]
    ) -> None:
        Connections.check(connection)
        conn_id = self._connections.id_of(connection) or 0
        holder = self._table.bind(key, self._peers.id, conn_id)
        if holder is not None and holder != self._peers.id and not self._peers.alive(holder):
            holder = self._table.bind(key, self._peers.id, conn_id)
        if holder is not None:
            raise exceptions.DuplicateSubscriberIdentifier(f"RPC identifier '{key}'")
        with self._lock:
            self._bound[key] = (connection, callback)
            connection.rpc[key] = callback

    def unbind(self, connection: Connection, key: str) -> None:
        with self._lock:
            if connection.rpc.pop(key, None) is None:
                return
            self._bound.pop(key, None)
        self._table.unbind(key, self._peers.id)

    def drop(self, connection: Connection) -> list[str]:
        """Forget the subscribers of closing *connection* (the lock held). :returns: their
        keys, for :meth:`unbind_all`."""
        keys = list(connection.rpc)
        for key in keys:
            self._bound.pop(key, None)
        return keys

    def unbind_all(self, keys: list[str]) -> None:
        for key in keys:
            self._table.unbind(key, self._peers.id)

    # Sending

    def send_rpc(self, key: str, message: Message) -> None:
        self._connections.check_open()
        local = self._bound.get(key)
        if local is not None:
            connection, callback = local
            if self._connections.flush([(connection, callback, (key, message))]):
                return
        holder = self._table.holder(key)
        if holder is None or holder == self._peers.id:
            raise exceptions.UnroutableError(_unroutable.no_rpc_subscriber(key))
        reply_conn = self._connections.id_of(message.reply_to)
        values = message_values(message, self._peers.id, reply_conn)[:-1] + (message.cancels,)
        if self._send_lane(holder, key, values, message.reply_to):
            return  # a dead holder's doorbell takes nothing: it is checked below then
        if not self._peers.alive(holder):
            raise exceptions.UnroutableError(_unroutable.no_rpc_subscriber(key))
        if not self._table.send_request(holder, key, values):
            raise exceptions.UnroutableError(_unroutable.no_rpc_subscriber(key))
        self._peers.ring(holder, _doorbell.RPC)

    def _send_lane(self, holder: int, key: str, values: tuple[Any, ...], reply_to: object) -> bool:
        """Send an RPC request by datagram (:mod:`._doorbell`). :returns: whether it went."""
        body, encoder_name, headers, cid, reply_process, reply_conn, deadline, cancels = values
        if not self._peers.can_send(holder):
            return False
        header = {"k": key, "c": cid, "p": reply_process, "n": reply_conn, "d": deadline,
                  "e": encoder_name, "h": headers, "x": cancels}  # fmt: skip
        if isinstance(reply_to, Connection):
            with self._lock:
                self._outstanding[cid] = (holder, reply_to, encoder_name, deadline)
        if self._peers.send(holder, _doorbell.REQUEST, header, body):
            return True
        with self._lock:
            self._outstanding.pop(cid, None)
        return False

    def send_reply(
        self, reply_to: object, correlation_id: str, payload: Payload, final: bool = True
    ) -> None:
        if isinstance(reply_to, Connection):
            if not reply_to.closed:
                self._connections.flush([(reply_to, reply_to.on_reply, (correlation_id, payload))])
            return
        if not isinstance(reply_to, Address):
            return
        if reply_to.process == self._peers.id:
            connection = self._connections.get(reply_to.conn)
            if connection is not None:
                post = (connection, connection.on_reply, (correlation_id, payload))
                self._connections.flush([post])
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
        from_file = correlation_id in self._db_requests
        if from_file:
            if final:
                self._db_requests.pop(correlation_id, None)
        else:  # a reply to a task or to an RPC that came by datagram: by datagram too
            header = {"n": reply_to.conn, "c": correlation_id, "e": values[4], "h": values[5],
                      "f": final}  # fmt: skip
            if self._peers.send(reply_to.process, _doorbell.ANSWER, header, values[3]):
                return
        answered = (self._peers.id, correlation_id) if final and from_file else None
        if self._table.reply(values, answered):
            self._peers.ring(reply_to.process, _doorbell.REPLY)

    # Answering ``lost`` (rule 3)

    def process_gone(self, process: int, lost: list[tuple[int, int, str, int, str]]) -> None:
        for reply_process, reply_conn, correlation_id, _, encoder_name in lost:
            self._send_lost(Address(reply_process, reply_conn), correlation_id, encoder_name)
        with self._lock:
            orphans = [(cid, v) for cid, v in self._outstanding.items() if v[0] == process]
            for cid, _ in orphans:
                del self._outstanding[cid]
        for correlation_id, (_, connection, encoder_name, _) in orphans:
            self._send_lost(connection, correlation_id, encoder_name)

    def _send_lost(self, address: object, correlation_id: str, encoder_name: str) -> None:
        reason = "the RPC subscriber's process ended before it answered"
        try:
            body = encoder(encoder_name).encode(lost_response(reason))
        except exceptions.KiwiError:
            return
        self.send_reply(address, correlation_id, Payload(body, encoder(encoder_name)))

    def _send_lost_response(
        self, reply_to: object, correlation_id: str, encoder_name: str, key: str
    ) -> None:
        codec = encoder(encoder_name)
        body = codec.encode(lost_response(f"the RPC subscriber '{key}' is gone"))
        self.send_reply(reply_to, correlation_id, Payload(body, codec))

    def prune(self) -> None:
        """Forget datagram RPCs whose deadline passed (their callers gave up)."""
        now = time.time()
        with self._lock:
            for cid, (_, _, _, deadline) in list(self._outstanding.items()):
                if deadline is not None and deadline < now:
                    del self._outstanding[cid]
            for cid, deadline in list(self._db_requests.items()):
                if deadline is not None and deadline < now:
                    del self._db_requests[cid]

    # Receiving (on the pump thread)

    def receive(self, messages: list[tuple[bytes, dict[str, Any], bytes]]) -> None:
        """Post the RPC requests and replies that came by datagram."""
        posts: list[Post] = []
        for kind, header, body in messages:
            payload = Payload(body, encoder(header["e"]), header.get("h"))
            correlation_id = header["c"]
            if kind == _doorbell.ANSWER:
                connection = self._connections.get(header["n"])
                if header.get("f", True):
                    with self._lock:
                        self._outstanding.pop(correlation_id, None)
                if connection is not None:
                    posts.append((connection, connection.on_reply, (correlation_id, payload)))
                continue
            key = header["k"]
            reply_to = self._connections.reply_to(self._peers.id, header["p"], header["n"])
            message = Message(
                payload, correlation_id, reply_to, deadline=header["d"], cancels=header["x"]
            )
            local = self._bound.get(key)
            if local is not None:
                posts.append((local[0], local[1], (key, message)))
            elif header["x"] is None and message.reply_to is not None:
                self._send_lost_response(message.reply_to, correlation_id, header["e"], key)
        self._connections.flush(posts)

    def take_replies(self) -> None:
        posts: list[Post] = []
        for _, conn_id, correlation_id, body, name, headers in self._table.take_replies(
            self._peers.id
        ):
            with self._lock:
                self._outstanding.pop(correlation_id, None)
            connection = self._connections.get(conn_id)
            if connection is not None:
                payload = Payload(body, encoder(name), headers)
                posts.append((connection, connection.on_reply, (correlation_id, payload)))
        self._connections.flush(posts)

    def take_requests(self) -> None:
        posts: list[Post] = []
        for row in self._table.take_requests(self._peers.id):
            local = self._bound.get(row.queue)
            message = Message(
                Payload(row.body, encoder(row.encoder), row.headers),
                row.correlation_id,
                self._connections.reply_to(self._peers.id, row.reply_process, row.reply_conn),
                seq=row.id,
                deadline=row.deadline,
                cancels=row.cancels,
            )
            if row.cancels is None and isinstance(message.reply_to, Address):
                self._db_requests[row.correlation_id] = row.deadline
            if local is not None:
                posts.append((local[0], local[1], (row.queue, message)))
            elif row.cancels is None and message.reply_to is not None:
                self._send_lost_response(
                    message.reply_to, row.correlation_id, row.encoder, row.queue
                )
        self._connections.flush(posts)
