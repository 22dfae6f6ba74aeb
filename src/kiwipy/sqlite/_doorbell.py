"""Doorbells: how one process wakes another that shares the SQLite file.

Each broker binds a Unix datagram socket (on Linux in the abstract namespace, so there is no
file to clean up and no path-length limit; elsewhere a socket file in the temporary
directory). A ring is one byte naming what changed (:data:`KINDS`); the receiving pump drains
every byte waiting and does each kind of work once. Rings are hints, never data: a lost one
costs at most the slow safety poll, so a full socket buffer is not an error.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import tempfile
from typing import Union

__all__ = ("ALL", "BROADCAST", "KINDS", "PEERS", "REPLY", "RPC", "STOP", "TASK", "Doorbell")

TASK = b"t"  # a task was queued or given back
RPC = b"q"  # an RPC request waits for this process
REPLY = b"r"  # a reply waits for this process
BROADCAST = b"b"  # a broadcast was sent
PEERS = b"p"  # a process joined or left
STOP = b"x"  # the pump of this process is to stop
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
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)

    def fileno(self) -> int:
        return self._socket.fileno()

    def ring(self, name: str, kind: bytes) -> bool:
        """Ring the doorbell called *name* with *kind*.

        :returns: ``False`` if nobody has that doorbell any more (its process is gone).
        """
        try:
            self._sender.sendto(kind, _address(name))
        except BlockingIOError:
            return True  # its buffer is full of rings: it will look anyway
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise
        return True

    def ring_self(self, kind: bytes) -> None:
        self.ring(self.name, kind)

    def drain(self) -> set[bytes]:
        """:returns: the kinds of every ring waiting (read without blocking)."""
        kinds: set[bytes] = set()
        while True:
            try:
                data = self._socket.recv(4096)
            except (BlockingIOError, InterruptedError):
                return kinds
            kinds.update(data[i : i + 1] for i in range(len(data)))

    def close(self) -> None:
        self._socket.close()
        self._sender.close()
        if isinstance(self._address, str):
            try:
                os.unlink(self._address)
            except FileNotFoundError:
                pass
