"""What the parts of a session see of it: :class:`SessionView`, implemented by
:class:`kiwipy.rmq._session.Session`.

The publisher (:mod:`kiwipy.rmq._publishing`), the recovery (:mod:`kiwipy.rmq._recovery`)
and the watchdog (:mod:`kiwipy.rmq._watchdog`) are parts the session owns and they call back
into it; they name it by this protocol, so that none of them imports the session's module,
which imports each of them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional, Protocol

import aiormq.abc

from ._events import Events
from ._options import RmqOptions

__all__ = ("SessionView",)


class SessionView(Protocol):
    """The members of :class:`~kiwipy.rmq._session.Session` its parts use."""

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
