"""What the parts of a session see of it: :class:`SessionView` and :class:`ChannelHost`,
both implemented by :class:`kiwipy.rmq.connection._session.Session`.

The publisher (:mod:`kiwipy.rmq.send._publishing`), the recovery (:mod:`kiwipy.rmq.connection._recovery`),
the watchdog (:mod:`kiwipy.rmq.connection._watchdog`) and the channel table
(:mod:`kiwipy.rmq.connection._channels`) are parts the session owns and they call back into it; they
name it by these protocols, so that none of them imports the session's module, which imports
each of them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional, Protocol

import aiormq.abc

from .._options import RmqOptions
from ._events import Events

__all__ = ("ChannelHost", "SessionView")


class SessionView(Protocol):
    """The members of :class:`~kiwipy.rmq.connection._session.Session` its parts use."""

    #: the aio-pika (robust) connection
    connection: Any
    options: RmqOptions
    events: Events

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def closed(self) -> bool: ...

    @property
    def is_connected(self) -> bool: ...

    @property
    def can_reconnect(self) -> bool: ...

    def live_connection(self) -> Optional[aiormq.abc.AbstractConnection]: ...

    def report(self, name: str, detail: str = "") -> None: ...

    async def channel(self, purpose: str) -> aiormq.abc.AbstractChannel: ...

    def renew_publish_channel(self, channel: aiormq.abc.AbstractChannel) -> None: ...

    def forget_channels(self) -> None: ...


class ChannelHost(Protocol):
    """What :class:`~kiwipy.rmq.connection._channels.Channels` needs of the session that owns it."""

    @property
    def closed(self) -> bool: ...

    def report(self, name: str, detail: str = "") -> None: ...

    async def wait_connected(self) -> aiormq.abc.AbstractConnection: ...
