"""Doorbells: how one process wakes another that shares the SQLite file.

Each broker binds a Unix datagram socket (on Linux in the abstract namespace, so there is no
file to clean up and no path-length limit; elsewhere a socket file in the temporary
directory). A ring is one byte naming what changed (:data:`KINDS`); the receiving pump drains
every byte waiting and does each kind of work once. Rings are hints, never data: a lost one
costs at most the slow safety poll, so a full socket buffer is not an error.

A receiver's queue holds a fixed number of datagrams whatever their size (Linux:
``net.unix.max_dgram_qlen``, 10 by default), so a burst of messages fills it at once. A ring
that finds it full waits for room (up to :data:`RING_WAIT`; the receiver's pump is draining
it) rather than being dropped, which would leave the receiver to find the work at its next
safety poll, seconds later. A receiver that made no room in that time (a stopped process) is
not waited for again until a ring reaches it without waiting.

A doorbell also carries small RPC requests and replies (:meth:`Doorbell.send`): a datagram
of one kind byte (:data:`REQUEST`, :data:`ANSWER`), a 4-byte header length, a JSON header and
the body. They are not durable (neither are RabbitMQ's); a send that does not fit or finds
the receiver's buffer full returns ``False`` and the caller goes through the file instead.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import sys
import tempfile
from typing import Any, Union

__all__ = (
    "ALL",
    "ANNOUNCE",
    "ANSWER",
    "BROADCAST",
    "KINDS",
    "MAX_DATAGRAM",
    "PEERS",
    "REPLY",
    "REQUEST",
    "RPC",
    "STOP",
    "TASK",
    "Doorbell",
)

TASK = b"t"  # a task was queued or given back
RPC = b"q"  # an RPC request waits for this process
REPLY = b"r"  # a reply waits for this process
BROADCAST = b"b"  # a broadcast was sent
PEERS = b"p"  # a process joined or left
STOP = b"x"  # the pump of this process is to stop
REQUEST = b"Q"  # a datagram carrying an RPC request
ANSWER = b"R"  # a datagram carrying a reply
ANNOUNCE = b"B"  # a datagram carrying a broadcast

#: Seconds a ring waits for room in a receiver's full queue (module doc).
RING_WAIT = 0.1

#: The largest datagram :meth:`Doorbell.send` sends (a larger message goes through the file).
MAX_DATAGRAM = 64 * 1024
_HEADER = struct.Struct("!I")
KINDS = frozenset({TASK, RPC, REPLY, BROADCAST, PEERS})
ALL = KINDS

_ABSTRACT = sys.platform.startswith("linux")
Address = Union[str, bytes]


def _address(name: str) -> Address:
    if _ABSTRACT:
        return b"\0kiwipy-" + name.encode()
    return os.path.join(tempfile.gettempdir(), f"kiwipy-{name}.sock")


class Doorbell:
    """This process's doorbell, called *name* (unique per broker), and the ringer of others'."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._address = _address(name)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self._address)
        self._socket.setblocking(False)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        # blocking, but for RING_WAIT at most (SO_SNDTIMEO): for a ring that found the
        # receiver's queue full
        self._patient = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        wait = struct.pack("ll", int(RING_WAIT), int(RING_WAIT % 1 * 1_000_000))
        self._patient.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, wait)
        self._stuck: set[str] = set()  # doorbells that made no room within RING_WAIT

    def fileno(self) -> int:
        return self._socket.fileno()

    def ring(self, name: str, kind: bytes) -> bool:
        """Ring the doorbell called *name* with *kind*.

        :returns: ``False`` if nobody has that doorbell any more (its process is gone).
        """
        try:
            self._sender.sendto(kind, _address(name))
        except BlockingIOError:
            return self._ring_patiently(name, kind)
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise
        if self._stuck:
            self._stuck.discard(name)
        return True

    def _ring_patiently(self, name: str, kind: bytes) -> bool:
        """Ring *name*, whose queue is full, waiting for room (module doc)."""
        if name in self._stuck:
            return True  # it made no room last time: its safety poll will find the work
        try:
            self._patient.sendto(kind, _address(name))
        except BlockingIOError:
            self._stuck.add(name)
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise
        return True

    def send(self, name: str, kind: bytes, header: dict[str, Any], body: bytes) -> bool:
        """Send a message of *kind* to the doorbell called *name*.

        :returns: whether it was sent (else: too large, the receiver's buffer is full, or
            its process is gone; go through the file).
        """
        head = json.dumps(header, separators=(",", ":")).encode()
        if len(head) + len(body) + 5 > MAX_DATAGRAM:
            return False
        try:
            self._sender.sendto(
                b"".join((kind, _HEADER.pack(len(head)), head, body)), _address(name)
            )
        except OSError:
            return False
        return True

    def ring_self(self, kind: bytes) -> None:
        self.ring(self.name, kind)

    def drain(self) -> tuple[set[bytes], list[tuple[bytes, dict[str, Any], bytes]]]:
        """:returns: the kinds of every ring waiting, and the messages waiting as ``(kind,
        header, body)`` (read without blocking)."""
        kinds: set[bytes] = set()
        messages: list[tuple[bytes, dict[str, Any], bytes]] = []
        while True:
            try:
                data = self._socket.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return kinds, messages
            kind = data[:1]
            if kind in (REQUEST, ANSWER, ANNOUNCE) and len(data) > 5:
                (size,) = _HEADER.unpack_from(data, 1)
                try:
                    header = json.loads(data[5 : 5 + size])
                except ValueError:
                    continue  # not ours: doorbells are private to this user, but be safe
                messages.append((kind, header, data[5 + size :]))
            else:
                kinds.update(data[i : i + 1] for i in range(len(data)))

    def close(self) -> None:
        self._socket.close()
        self._sender.close()
        self._patient.close()
        if isinstance(self._address, str):
            try:
                os.unlink(self._address)
            except FileNotFoundError:
                pass
