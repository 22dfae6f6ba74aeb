"""The registry of URL schemes behind :func:`kiwipy.connect`: scheme -> communicator factory.

A transport is found by the scheme of the URL it is given. Nothing here imports a transport
at module load: the built-in ones are registered by module path and imported the first time
their scheme is used, so the interfaces (``kiwipy.communications``) never import upward.

A third-party transport registers its scheme either by calling :func:`register_scheme` or
through an entry point in the group ``kiwipy.transports`` (the entry point's name is the
scheme, its object the factory). Entry points are read once, the first time a scheme that
is not registered is asked for, so an installed transport costs nothing until it is used.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

__all__ = ("ENTRY_POINT_GROUP", "Factory", "open_uri", "register_scheme", "schemes")

#: The entry point group a third-party transport registers its scheme in.
ENTRY_POINT_GROUP = "kiwipy.transports"

#: ``factory(uri, **kwargs)``: connect a thread communicator to *uri* (a ``str``, or a list
#: of ``str`` for a factory registered with ``multiple_urls=True``).
Factory = Callable[..., Any]

# RFC 3986: a scheme is a letter followed by letters, digits, '+', '-' or '.'.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


@dataclass(frozen=True)
class _Entry:
    #: the factory, or ``"module:attribute"`` naming it, imported on first use
    factory: Union[Factory, str]
    #: whether a list of URLs (the nodes of one cluster) may be given
    multiple_urls: bool

    def load(self) -> Factory:
        if not isinstance(self.factory, str):
            return self.factory
        module_name, _, attribute = self.factory.partition(":")
        factory: Factory = getattr(importlib.import_module(module_name), attribute)
        return factory


def _rmq(uri: Union[str, list[str]], **kwargs: Any) -> Any:
    """RabbitMQ: the keyword arguments go to :func:`kiwipy.rmq.connect`."""
    # By module path, so that loading the registry does not load the transport.
    rmq = importlib.import_module("kiwipy.rmq")
    return rmq.connect(connection_params=uri, **kwargs)


_lock = threading.Lock()
# Registration order is kept: it is the order the error for an unknown scheme lists them in.
_registry: dict[str, _Entry] = {
    "amqp": _Entry(_rmq, multiple_urls=True),
    "amqps": _Entry(_rmq, multiple_urls=True),
    "memory": _Entry("kiwipy.memory:connect", multiple_urls=False),
    "sqlite": _Entry("kiwipy.sqlite:connect", multiple_urls=False),
}
_entry_points_read = False


def register_scheme(
    scheme: str, factory: Union[Factory, str], *, multiple_urls: bool = False, replace: bool = False
) -> None:
    """Make :func:`kiwipy.connect` connect URLs of *scheme* with *factory*.

    :param scheme: the URL scheme, without ``://`` (e.g. ``'sqlite'`` for ``sqlite://...``).
    :param factory: ``factory(uri, **kwargs)``, returning a :class:`~kiwipy.Communicator`;
        or the string ``'module:attribute'`` naming it, imported the first time it is used.
    :param multiple_urls: whether :func:`kiwipy.connect` may pass the factory a list of URLs
        of this scheme instead of one.
    :param replace: replace the factory already registered for *scheme*.
    :raises ValueError: if *scheme* is not a valid URL scheme, or is registered already and
        *replace* is false.
    """
    if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme):
        raise ValueError(f"not a URL scheme (letters, digits, '+', '-', '.'): {scheme!r}")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise ValueError(f"a factory must be callable or 'module:attribute', not {factory!r}")
    with _lock:
        if scheme in _registry and not replace:
            raise ValueError(f"the URL scheme {scheme!r} is registered already")
        _registry[scheme] = _Entry(factory, multiple_urls)


def schemes() -> tuple[str, ...]:
    """:returns: the schemes registered so far, in the order they were registered."""
    with _lock:
        return tuple(_registry)


def _read_entry_points() -> None:
    """Register the schemes of the ``kiwipy.transports`` entry points, once; a scheme
    registered already (built in or by :func:`register_scheme`) keeps its factory."""
    global _entry_points_read
    with _lock:
        if _entry_points_read:
            return
        _entry_points_read = True
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if _SCHEME.fullmatch(entry_point.name) and entry_point.name not in _registry:
                # ``module:attribute``: imported only when the scheme is used.
                _registry[entry_point.name] = _Entry(entry_point.value, multiple_urls=False)


def _lookup(uri: str) -> Optional[_Entry]:
    scheme, separator, _ = uri.partition("://")
    if not separator:
        return None
    with _lock:
        entry = _registry.get(scheme)
    if entry is None:
        _read_entry_points()
        with _lock:
            entry = _registry.get(scheme)
    return entry


def _unknown(uri: str) -> ValueError:
    known = ", ".join(f"{scheme}://" for scheme in schemes())
    return ValueError(f"Unknown communicator uri '{uri}': use one of {known}")


def _multiple(uris: Sequence[Any]) -> tuple[Factory, list[str]]:
    urls = list(uris)
    entries = [_lookup(url) if isinstance(url, str) else None for url in urls]
    first = entries[0] if entries else None
    if first is None or not first.multiple_urls or any(entry != first for entry in entries):
        multiple = " or ".join(f"{s}://" for s, e in _registry.items() if e.multiple_urls)
        raise ValueError(f"a list of URIs must hold {multiple} URLs only, not {uris!r}")
    return first.load(), urls


def open_uri(uri: Union[str, Sequence[str]], **kwargs: Any) -> Any:
    """Connect a thread communicator to *uri* with the factory of its scheme.

    :param uri: one URL, or a list of URLs of a scheme registered with ``multiple_urls``.
    :raises ValueError: for a scheme nobody registered (the message lists the registered
        ones), or a list that mixes schemes or holds a scheme that takes one URL only.
    """
    if not isinstance(uri, str):
        factory, urls = _multiple(uri)
        return factory(urls, **kwargs)
    entry = _lookup(uri)
    if entry is None:
        raise _unknown(uri)
    return entry.load()(uri, **kwargs)
