"""A loopback TCP proxy that breaks connections on purpose.

Invariants:

- All sockets belong to the proxy's own event loop, on a daemon thread, so blocking control
  methods work the same from sync tests and from async tests running another loop.
- ``stall()`` pauses both pumps before they *read*, so nothing is ever dropped: bytes sent during
  a stall wait in the kernel and in asyncio's read buffers, and ``resume()`` delivers them in
  order. (A dropped byte would desynchronise the AMQP framing, turning a stall into garbage.)
- ``cut()`` and ``refuse(True)`` reset sockets (SO_LINGER 0) so peers see a RST, like a crash.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from types import TracebackType
from typing import Any, Callable, Optional
from urllib.parse import quote

from typing_extensions import Self

_CHUNK = 65536
_CONTROL_TIMEOUT = 10.0


def amqp_url(port: int, vhost: str = "/", *, user: str = "guest", password: str = "guest") -> str:
    """Build an ``amqp://`` URL for ``127.0.0.1:port``; the default vhost gives a bare ``/``."""
    path = "" if vhost == "/" else quote(vhost, safe="")
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}/{path}"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort the transport so the kernel sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # already closed by the peer: nothing left to reset
    writer.transport.abort()


class _Link:
    """One client connection and its upstream twin."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.writers = (client, upstream)
        self.closed = False

    def close(self, *, reset: bool) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in self.writers:
            if reset:
                _reset(writer)
            else:
                writer.close()


class TcpProxy:
    """Forward ``127.0.0.1:<ephemeral>`` to ``target_host:target_port``, with faults on demand.

    :param target_host: where to forward connections.
    :param target_port: the port to forward to.
    """

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5672) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        """Connections accepted and forwarded."""
        self.refused = 0
        """Connections reset at once: accepted while refusing, or with the target down."""
        self._links: set[_Link] = set()
        self._refusing = False
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event  # made on the loop thread: Python 3.9 binds it on creation
        self._server: Optional[asyncio.Server] = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")

    @property
    def open_connections(self) -> int:
        """Client connections currently open through the proxy."""
        return len(self._links)

    @property
    def url(self) -> str:
        """AMQP URL through the proxy with guest credentials and the default vhost."""
        return amqp_url(self.port)

    def url_for(self, vhost: str = "/", *, user: str = "guest", password: str = "guest") -> str:
        """AMQP URL through the proxy for another vhost or other credentials."""
        return amqp_url(self.port, vhost, user=user, password=password)

    def start(self) -> Self:
        """Start the loop thread and listen; returns ``self`` once ``port`` is bound."""
        if self._server is None:
            self._thread.start()
            self._server = self._run(self._listen())
        return self

    def cut(self) -> None:
        """Reset every open client and upstream connection at once."""
        self._call(lambda: self._close_links(reset=True))

    def stall(self) -> None:
        """Stop forwarding in both directions, keeping every socket open (a black hole)."""
        self._call(self._flowing.clear)

    def resume(self) -> None:
        """Forward again; bytes held back during the stall are delivered, in order.

        Peers may have given up meanwhile (heartbeats; the broker's 10 s handshake timeout for
        connections opened during the stall): their EOF or RST then ends the link.
        """
        self._call(self._flowing.set)

    def refuse(self, refusing: bool = True) -> None:
        """While true, reset new connections as soon as they are accepted."""
        self._refusing = refusing

    def close(self) -> None:
        """Reset all connections, stop listening and stop the loop thread. Idempotent."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            self._run(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CONTROL_TIMEOUT)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CONTROL_TIMEOUT)

    def _call(self, func: Callable[[], object]) -> None:
        async def call() -> None:
            func()

        self._run(call())

    async def _listen(self) -> asyncio.Server:
        self._flowing = asyncio.Event()
        self._flowing.set()
        server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _shutdown(self) -> None:
        self._close_links(reset=True)
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _close_links(self, *, reset: bool) -> None:
        for link in list(self._links):
            link.close(reset=reset)
        self._links.clear()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self.refused += 1
            _reset(writer)  # the target is down: look like it to the client
            return
        self.accepted += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        await asyncio.gather(
            self._pump(reader, up_writer, link), self._pump(up_reader, writer, link)
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while not link.closed:
                await self._flowing.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass  # a reset from either side ends the link below
        finally:
            self._links.discard(link)
            link.close(reset=False)
