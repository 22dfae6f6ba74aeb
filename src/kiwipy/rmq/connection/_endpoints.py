"""Several endpoints for one connection: the nodes of a RabbitMQ cluster (docs/cluster.md).

aio-pika's reconnecting connection knows one URL. This module picks the node each connection
attempt goes to, below aio-pika, in the transport factory aiormq calls once per attempt to
open the socket (:class:`kiwipy.rmq.connection._amqp.RobustConnection`): so the first connection and
every reconnection go through the same choice, and aio-pika's own recovery (reopening
channels) and ours (:mod:`kiwipy.rmq.connection._recovery`) run unchanged on whichever node answered.

Invariants:

* Every attempt tries each endpoint at most once, starting with the one *after* the endpoint
  of the previous connection: a node that just failed is tried last, and the first attempt
  after a loss goes straight to another node.
* The order is shuffled once per connection (``shuffle_endpoints``), so clients given the same
  list spread over the nodes and fail over to different ones; without shuffling, the given
  order is kept (the first reachable node in the list is used).
* Only host and port change between endpoints: user, password, virtual host, TLS settings and
  URL parameters are those of the connection's URL (shared by every endpoint, checked by
  :func:`kiwipy.rmq._options.endpoint_urls`). A TLS connection checks each node's certificate
  against that node's host name.
* An attempt that reaches no endpoint raises :class:`EndpointsUnreachable`, an aiormq
  connection error (so aio-pika retries, or fails the first connection), which lists why
  each endpoint failed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Sequence
from typing import Callable, TypeVar

from aiormq import exceptions as amqp_errors
from yarl import URL

__all__ = ("DEFAULT_PORTS", "Endpoints", "EndpointsUnreachable")

T = TypeVar("T")

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


class EndpointsUnreachable(amqp_errors.AMQPConnectionError):
    """No endpoint of a connection could be reached in one attempt.

    :ivar failures: ``(url, error)`` for each endpoint tried, in the order tried.
    """

    def __init__(self, failures: Sequence[tuple[URL, BaseException]]) -> None:
        self.failures = list(failures)
        tried = ", ".join(f"{url.host}:{url.port}" for url, _ in self.failures)
        super().__init__(f"no endpoint reachable (tried {tried})")

    def __str__(self) -> str:
        return str(self.args[0])


class Endpoints:
    """The endpoints of one connection and which of them to try next (module doc).

    :param urls: one URL per endpoint (:func:`~kiwipy.rmq._options.endpoint_urls`).
    :param shuffle: try them in a random order rather than the given one.
    :param attempt_timeout: seconds the whole of one attempt may take; each endpoint gets
        its share, so one that drops packets cannot use up the attempt.
    """

    def __init__(self, urls: Sequence[str], shuffle: bool, attempt_timeout: float) -> None:
        if not urls:
            raise ValueError("no endpoint given")
        self._urls = [URL(each) for each in urls]
        if shuffle:
            random.shuffle(self._urls)
        self._next = 0
        self._share = attempt_timeout / len(self._urls)
        self.current: URL = self._urls[0]

    def __len__(self) -> int:
        return len(self._urls)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._urls)

    def target(self, url: URL, endpoint: URL) -> URL:
        """:returns: the connection's *url* (credentials, virtual host, parameters) aimed at
        *endpoint*'s host and port."""
        port = endpoint.port or DEFAULT_PORTS.get(url.scheme, 5672)
        return url.with_host(endpoint.host or "localhost").with_port(port)

    async def open(self, url: URL, create: Callable[[URL], Awaitable[T]]) -> T:
        """:returns: what ``create(target)`` returns for the first endpoint that answers.

        :param url: the connection's URL, as aiormq passes it to the transport factory.
        :raises EndpointsUnreachable: if none of them does.
        """
        failures: list[tuple[URL, BaseException]] = []
        for _ in range(len(self._urls)):
            index = self._next
            self._next = (index + 1) % len(self._urls)
            target = self.target(url, self._urls[index])
            try:
                opened = await asyncio.wait_for(create(target), self._share)
            except (OSError, asyncio.TimeoutError, amqp_errors.AMQPError) as exc:
                failures.append((target, exc))
                continue
            self.current = target
            return opened
        raise EndpointsUnreachable(failures)
