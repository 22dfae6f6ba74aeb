"""``EventHelper``, kept from kiwipy 0.9 for compatibility; nothing else belongs here."""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

__all__ = ("EventHelper",)

_LOGGER = logging.getLogger(__name__)


class EventHelper:
    """Keeps a set of listeners of one type and calls a named method on each of them.

    :param listener_type: the type every listener must be an instance of.
    """

    def __init__(self, listener_type: type) -> None:
        assert listener_type is not None, "Must provide valid listener type"
        self._listener_type = listener_type
        self._listeners: set[Any] = set()

    def add_listener(self, listener: Any) -> None:
        assert isinstance(listener, self._listener_type), "Wrong listener type"
        self._listeners.add(listener)

    def remove_listener(self, listener: Any) -> None:
        self._listeners.discard(listener)

    def remove_all_listeners(self) -> None:
        self._listeners.clear()

    @property
    def listeners(self) -> set[Any]:
        return self._listeners

    def fire_event(
        self, event_function: Optional[Callable[..., Any]], *args: Any, **kwargs: Any
    ) -> None:
        """Call the method named like *event_function* on every listener; exceptions are
        logged, not raised.

        :raises ValueError: if *event_function* is ``None``.
        """
        if event_function is None:
            raise ValueError("Must provide valid event method")
        for listener in list(self.listeners):
            try:
                getattr(listener, event_function.__name__)(*args, **kwargs)
            except Exception:
                _LOGGER.exception("Listener '%s' produced an exception", listener)
