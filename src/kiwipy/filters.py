"""Client-side filtering of broadcasts by subject and sender.

Matching rules (identical to kiwipy 0.9, so filters keep selecting the same messages):

* A ``str`` filter is a wildcard pattern: ``*`` matches any run of characters (including
  none and including dots) and ``.`` matches only a literal dot. Every other character keeps
  its regular-expression meaning. The pattern is matched at the **start** of the value only:
  ``'purchase'`` matches ``'purchase.car'``, ``'alice.jones'`` matches ``'alice.jonesX'``,
  ``'a.b'`` does not match ``'aXb'``. End a pattern with ``$`` to require a full match.
* A compiled :class:`re.Pattern` is applied with its ``match`` method.
* Any other value matches by equality.
* Several filters of one kind (subject or sender) are OR-ed; the subject and sender
  conditions are AND-ed. A message whose subject (or sender) is ``None`` is never filtered
  out by subject (or sender) filters.
"""

from __future__ import annotations

import re
from typing import Any, Callable

__all__ = ("BroadcastFilter",)

_Matcher = Callable[[Any], bool]


def _matcher(filter_value: Any) -> _Matcher:
    if isinstance(filter_value, str):
        regex = re.compile(filter_value.replace(".", "[.]").replace("*", ".*"))
        return lambda value: isinstance(value, str) and regex.match(value) is not None
    if isinstance(filter_value, re.Pattern):
        pattern = filter_value
        return lambda value: isinstance(value, str) and pattern.match(value) is not None
    return lambda value: bool(value == filter_value)


class BroadcastFilter:
    """Wrap a broadcast subscriber so it only sees broadcasts whose subject and sender match.

    :param subscriber: the broadcast subscriber,
        ``subscriber(communicator, body, sender, subject, correlation_id)``.
    :param subject: an optional first subject filter.
    :param sender: an optional first sender filter.
    """

    def __init__(self, subscriber: Callable[..., Any], subject: Any = None, sender: Any = None):
        self._subscriber = subscriber
        self._subject_filters: list[_Matcher] = []
        self._sender_filters: list[_Matcher] = []
        if subject is not None:
            self.add_subject_filter(subject)
        if sender is not None:
            self.add_sender_filter(sender)

    @property
    def __name__(self) -> str:
        return "BroadcastFilter"

    def __call__(
        self,
        communicator: Any,
        body: Any,
        sender: Any = None,
        subject: Any = None,
        correlation_id: Any = None,
    ) -> Any:
        if self.is_filtered(sender, subject):
            return None
        return self._subscriber(communicator, body, sender, subject, correlation_id)

    def add_subject_filter(self, subject_filter: Any) -> None:
        """Also accept broadcasts whose subject matches *subject_filter*."""
        self._subject_filters.append(_matcher(subject_filter))

    def add_sender_filter(self, sender_filter: Any) -> None:
        """Also accept broadcasts whose sender matches *sender_filter*."""
        self._sender_filters.append(_matcher(sender_filter))

    def is_filtered(self, sender: Any, subject: Any) -> bool:
        """:returns: ``True`` if a broadcast with this sender and subject is filtered out."""
        if subject is not None and self._subject_filters:
            if not any(match(subject) for match in self._subject_filters):
                return True
        if sender is not None and self._sender_filters:
            if not any(match(sender) for match in self._sender_filters):
                return True
        return False
