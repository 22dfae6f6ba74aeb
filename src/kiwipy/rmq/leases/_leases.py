"""Leases for long tasks, the pure part: headers, names, settings and decisions (no I/O).

See ``docs/long-tasks.md`` for the design. Invariants the I/O modules rely on:

* A *lease* is a copy of a task message, unchanged in body and properties, carrying the
  headers :data:`OWNER_HEADER` (the owning worker's id), :data:`LEASE_HEADER` (one uuid per
  lease) and :data:`STRIKES_HEADER` (failed checks in a row). A message without
  :data:`LEASE_HEADER` is an ordinary task.
* :func:`judge` is the whole decision table of a checker: the owner's answer and the strikes
  so far give one :class:`Verdict`. Nothing else decides whether a task runs again.
* :class:`Slots` keeps ``prefetch_count`` a bound on the tasks a worker has *in hand*, held
  or leased: converting a task into a lease acknowledges its delivery, which would otherwise
  let the broker send one more task per lease (AiiDA uses the prefetch count as its number of
  process slots per worker).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

from pamqp import commands as spec

__all__ = (
    "ANSWERS",
    "FINISHED",
    "LEASES",
    "LEASE_HEADER",
    "OWNER_HEADER",
    "RELEASED",
    "RENEW",
    "RUNNING",
    "STRIKES_HEADER",
    "TAKEOVERS_HEADER",
    "TAKE_OVER",
    "UNKNOWN",
    "Lease",
    "LeaseSettings",
    "Slots",
    "Verdict",
    "claim_queue",
    "copy_properties",
    "dead_queue",
    "delivery_timeout_ms",
    "judge",
    "lease_queue",
    "read_lease",
    "with_lease",
    "without_lease",
    "worker_queue",
)

#: The channel purpose of lease checks, answers and claims.
LEASES = "leases"

OWNER_HEADER = "x-kiwipy-lease-owner"
LEASE_HEADER = "x-kiwipy-lease-id"
STRIKES_HEADER = "x-kiwipy-lease-strikes"
#: How many times the task was taken over from a dead owner (for operators and tests).
TAKEOVERS_HEADER = "x-kiwipy-lease-takeovers"
_LEASE_HEADERS = (OWNER_HEADER, LEASE_HEADER, STRIKES_HEADER)

# What an owner answers about one of its leases.
RUNNING = "running"
FINISHED = "finished"
#: The owner gave the task up without an outcome (its reply could not be sent, or it was
#: requeued in pull mode): run it again at once.
RELEASED = "released"
#: The owner never had the lease or forgot it long after it finished.
UNKNOWN = "unknown"
ANSWERS = (RUNNING, FINISHED, RELEASED, UNKNOWN)

# What a checker does with a lease copy.
RENEW = "renew"  # park it again for one more interval
DROP = "drop"  # acknowledge it: the task is finished
TAKE_OVER = "take-over"  # claim it and run the task here


class Verdict(NamedTuple):
    """A checker's decision: *action* and the strikes to write on a renewed copy."""

    action: str
    strikes: int = 0


def judge(answer: Optional[str], strikes: int, max_strikes: int) -> Verdict:
    """The checker's decision table (``docs/long-tasks.md``).

    :param answer: the owner's answer, ``None`` if it is unreachable or silent.
    :param strikes: the strikes the copy carries.
    :param max_strikes: the ``lease_strikes`` option.
    """
    if answer == RUNNING:
        return Verdict(RENEW, 0)  # whoever checks renews: the owner does nothing periodic
    if answer in (FINISHED, UNKNOWN):
        return Verdict(DROP)
    if answer == RELEASED:
        return Verdict(TAKE_OVER)
    strikes += 1
    if strikes >= max_strikes:
        return Verdict(TAKE_OVER)
    return Verdict(RENEW, strikes)


class Lease(NamedTuple):
    """The lease headers of a copy."""

    owner: str
    lease_id: str
    strikes: int = 0
    takeovers: int = 0


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


def read_lease(headers: Optional[Mapping[str, Any]]) -> Optional[Lease]:
    """:returns: the lease a message carries, or ``None`` for an ordinary task."""
    if not headers or not headers.get(LEASE_HEADER) or not headers.get(OWNER_HEADER):
        return None
    return Lease(
        _text(headers[OWNER_HEADER]),
        _text(headers[LEASE_HEADER]),
        _int(headers.get(STRIKES_HEADER)),
        _int(headers.get(TAKEOVERS_HEADER)),
    )


def takeovers(headers: Optional[Mapping[str, Any]]) -> int:
    """:returns: how many times the task in a message with these headers was taken over."""
    return _int((headers or {}).get(TAKEOVERS_HEADER))


def without_lease(headers: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """:returns: a copy of *headers* without the lease headers (the take-over count stays)."""
    return {k: v for k, v in (headers or {}).items() if k not in _LEASE_HEADERS}


def with_lease(headers: Optional[Mapping[str, Any]], lease: Lease) -> dict[str, Any]:
    """:returns: a copy of *headers* carrying *lease* instead of any earlier one."""
    result = without_lease(headers)
    result.update(
        {
            OWNER_HEADER: lease.owner,
            LEASE_HEADER: lease.lease_id,
            STRIKES_HEADER: lease.strikes,
        }
    )
    if lease.takeovers:
        result[TAKEOVERS_HEADER] = lease.takeovers
    return result


def copy_properties(props: spec.Basic.Properties, headers: dict[str, Any]) -> spec.Basic.Properties:
    """:returns: *props* with *headers*, persistent, for a copy of the same task.

    ``user_id`` is left out (the broker refuses one that is not the publisher's own) and so is
    ``expiration`` (a copy parked in the lease queue must expire with the queue's TTL only).
    """
    return spec.Basic.Properties(
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        headers=headers,
        delivery_mode=2,
        priority=props.priority,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
        message_id=props.message_id,
        timestamp=props.timestamp,
        message_type=props.message_type,
        app_id=props.app_id,
    )


# Names


def worker_queue(owner: str) -> str:
    """:returns: the exclusive queue on which the worker *owner* answers lease checks."""
    return f"kiwipy.worker.{owner}"


def lease_queue(queue: str) -> str:
    """:returns: the queue where the leases of the task queue *queue* are parked."""
    return f"{queue}.leases"


def claim_queue(queue: str, lease_id: str) -> str:
    """:returns: the exclusive queue whose declaration claims the lease *lease_id*."""
    return f"{queue}.claim.{lease_id}"


def dead_queue(queue: str) -> str:
    """:returns: the dead-letter queue of the task queue *queue*."""
    return f"{queue}.dead"


# Settings


class LeaseSettings(NamedTuple):
    """The lease options of one communicator (see :mod:`kiwipy.rmq._options`)."""

    after: Optional[float] = 600.0
    interval: float = 60.0
    strikes: int = 2
    check_timeout: float = 5.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LeaseSettings:
        return cls(
            options["task_lease_after"] or None,
            float(options["lease_interval"]),
            int(options["lease_strikes"]),
            float(options["lease_check_timeout"]),
        )

    @property
    def enabled(self) -> bool:
        return self.after is not None

    @property
    def interval_ms(self) -> int:
        return max(int(self.interval * 1000), 1)

    @property
    def takeover_bound(self) -> float:
        """Longest time from an owner's death to a take-over, in seconds, when the broker
        notices the death at once (a killed process): one check per interval, each waiting
        at most ``check_timeout``, until ``strikes`` checks have failed."""
        return self.strikes * (self.interval + self.check_timeout)


_TIMEOUT_TEXT = re.compile(r"delivery acknowledgement .*timed out", re.IGNORECASE)
_TIMEOUT_VALUE = re.compile(r"Timeout value used:\s*(\d+)\s*ms", re.IGNORECASE)


def delivery_timeout_ms(reason: str) -> Optional[int]:
    """:returns: the broker's ``consumer_timeout`` (ms) if *reason*, the text of a channel
    closure, says a delivery timed out (``-1`` when the text gives no value), else ``None``."""
    if not _TIMEOUT_TEXT.search(reason):
        return None
    value = _TIMEOUT_VALUE.search(reason)
    return int(value.group(1)) if value else -1


class Slots:
    """The prefetch count of a task consumer, kept as a bound on the tasks in hand.

    A consumer's prefetch counts only its own unacknowledged deliveries; leased tasks (and
    tasks held on an earlier consumer) do not count. So each time the consumer starts, it
    gets ``limit - in_hand``; afterwards, :meth:`wanted` says when it must start again:
    at once when a task of the current consumer becomes a lease (else the broker would send
    one task too many), and lazily when a task outside it ends (to use the slot it frees).

    :param limit: the configured prefetch count; 0 (unlimited) disables all of this.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_hand = 0
        self.on_consumer = 0
        self.generation = 0
        self.prefetch = limit

    @property
    def active(self) -> bool:
        return self.limit > 0

    def received(self) -> int:
        """A delivery of the current consumer is in hand. :returns: its generation."""
        self.in_hand += 1
        self.on_consumer += 1
        return self.generation

    def leased(self, generation: int) -> None:
        """A task in hand (received in *generation*) no longer holds its delivery."""
        if generation == self.generation:
            self.on_consumer -= 1

    def done(self, generation: int, leased: bool) -> None:
        """A task in hand (received in *generation*) is finished or given back."""
        self.in_hand -= 1
        if generation == self.generation and not leased:
            self.on_consumer -= 1

    def allowed(self) -> int:
        """:returns: the prefetch the current consumer should have now."""
        return self.limit - (self.in_hand - self.on_consumer)

    def wanted(self) -> Optional[str]:
        """:returns: ``'now'`` when the consumer may be sent more than the bound allows,
        ``'later'`` when it could take more than it is allowed, else ``None``."""
        allowed = self.allowed()
        if allowed < self.prefetch:
            return "now"
        if allowed > self.prefetch:
            return "later"
        return None

    def restarted(self) -> int:
        """A new consumer starts. :returns: its prefetch (0: do not consume for now)."""
        self.generation += 1
        self.on_consumer = 0
        self.prefetch = max(self.limit - self.in_hand, 0)
        return self.prefetch
