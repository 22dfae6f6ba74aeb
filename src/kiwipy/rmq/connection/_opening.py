"""How :func:`kiwipy.rmq.communicator.async_connect` opens its aio-pika connection: one URL
for aio-pika out of the endpoints given, a quick first reconnection, the endpoints of a
cluster tried in turn, and failures said in words (:mod:`kiwipy.rmq.connection._connecting`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, cast

import aio_pika
from yarl import URL

from .._options import (
    ConnectionFactory,
    ConnectionParams,
    RmqOptions,
    check_url_query,
    endpoint_urls,
)
from . import _amqp, _connecting
from ._endpoints import Endpoints
from ._recovery import ReconnectPacing

__all__ = ("open_connection",)

#: aio-pika's default ``reconnect_interval``.
_AIO_PIKA_INTERVAL = 5.0


async def open_connection(
    connection_params: ConnectionParams,
    connection_factory: ConnectionFactory,
    options: dict[str, Any],
    resolved: RmqOptions,
) -> Any:
    """:returns: the connection made by *connection_factory* (see
    :func:`~kiwipy.rmq.communicator.async_connect` for the parameters); with the default
    factory, :func:`aio_pika.connect_robust` paced and over the endpoints given.

    :param options: the options as given: a default ``reconnect_max_interval`` is added.
    :param resolved: the options resolved.
    :raises ValueError: for a bad endpoint or URL query parameter.
    :raises ConnectFailed: if the connection cannot be opened.
    """
    asked = connection_params  # for error messages: before the pacing below adds to it
    urls = endpoint_urls(connection_params)
    if connection_factory is aio_pika.connect_robust:
        check_url_query(connection_params)  # aiormq would ignore a bad one silently
        connection_params = _one_url(connection_params, urls)
        connection_params = _paced(connection_params, options)
        endpoints = None
        if len(urls) > 1:
            shuffle = resolved["shuffle_endpoints"]
            endpoints = Endpoints(urls, shuffle, _amqp.CONNECT_TIMEOUT)
        connection_factory = functools.partial(
            aio_pika.connect_robust,
            connection_class=cast(
                type[_amqp.RobustConnection],
                functools.partial(_amqp.RobustConnection, endpoints=endpoints),
            ),
            timeout=_amqp.CONNECT_TIMEOUT,
        )
    elif len(urls) > 1:
        raise ValueError(
            "several endpoints need the default connection factory (aio_pika.connect_robust)"
        )
    else:
        connection_params = _one_url(connection_params, urls)
    connection = await _connecting.opening(
        asked, _open_connection(connection_params, connection_factory)
    )
    return connection


async def _open_connection(params: ConnectionParams, factory: ConnectionFactory) -> Any:
    """:returns: ``factory(**params)`` for a dict, ``factory(params)`` for a URL string."""
    params = params or {}
    if isinstance(params, Mapping):
        return await factory(**params)
    return await factory(params)


def _one_url(params: ConnectionParams, urls: list[str]) -> ConnectionParams:
    """:returns: *params* with one URL for aio-pika: the first endpoint's (the endpoint of
    each attempt is chosen later: :mod:`kiwipy.rmq.connection._endpoints`)."""
    if not urls:
        return params
    if isinstance(params, Mapping):
        return {**params, "url": urls[0]}
    return urls[0]


def _paced(params: ConnectionParams, options: dict[str, Any]) -> ConnectionParams:
    """:returns: *params* for :func:`aio_pika.connect_robust` with a first
    ``reconnect_interval`` of 0.1 s, unless the user chose one.

    aio-pika sleeps ``reconnect_interval`` after *every* successful connection before it
    watches for the next loss, so without this a connection lost in its first 5 s would be
    retried only 5 s after it was made. The session then paces the attempts of an outage up
    to ``reconnect_max_interval`` (:class:`~kiwipy.rmq.connection._recovery.ReconnectPacing`).
    """
    first = ReconnectPacing.FIRST
    if isinstance(params, Mapping):
        url = params.get("url")
        if "reconnect_interval" in params or "reconnect_interval" in URL(url or "").query:
            return params
        options.setdefault("reconnect_max_interval", _AIO_PIKA_INTERVAL)
        return {**params, "reconnect_interval": first}
    url = URL(str(params or "amqp://guest:guest@localhost/"))  # one URL: see _one_url
    if "reconnect_interval" in url.query:
        return params
    options.setdefault("reconnect_max_interval", _AIO_PIKA_INTERVAL)
    return str(url.update_query(reconnect_interval=str(first)))
