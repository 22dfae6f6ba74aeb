"""The queues of a task queue: the queue itself, ``<queue>.dead`` and ``<queue>.leases``.

Rules (see :mod:`kiwipy.rmq.tasks` and ``docs/long-tasks.md``):

1. A queue that exists is used as it is: each is declared *passively* first, and only a
   missing one is declared, with the arguments below. RabbitMQ refuses to redeclare a queue
   with other arguments, so an old kiwipy 0.9 queue keeps working and is never changed in
   place.
2. Every queue is durable or exclusive: RabbitMQ 4 deprecates transient non-exclusive
   queues. Testing mode adds ``x-expires`` instead, so test queues vanish on their own. The
   one exception is kiwipy 0.9's own declaration (rule 3).
3. A new task queue has no message TTL unless ``task_message_ttl`` asks for one, and
   dead-letters to ``<queue>.dead`` (expiry, and a quorum queue's delivery limit, leave a
   trace there with the broker's ``x-death`` header). ``task_queue_compat`` (on by default
   in testing mode) gives exactly what kiwipy 0.9 declares instead: ``x-message-ttl`` 7
   days, and in testing mode a transient queue with ``x-expires`` 10 s, since a 0.9 peer
   redeclares the queue and RabbitMQ refuses any difference (``PRECONDITION_FAILED``).
4. ``task_queue_type='quorum'`` makes the three queues quorum queues; the task queue and the
   lease queue dead-letter *at least once* (a quorum queue's default is at most once, which
   could drop a dead task, or a lease copy on its way back, when a node dies). The task
   queue's delivery limit is exactly ``task_delivery_limit``: without one, none, on every
   RabbitMQ version (4.0 made 20 the default for quorum queues: ``x-delivery-limit = -1``
   turns that off there; 3.x has no default and refuses -1, so nothing is set).
5. The lease queue has no consumer: its ``x-message-ttl`` (``lease_interval``) sends every
   copy back to the task queue after one interval, where a worker checks it. One TTL per queue
   keeps expiry in FIFO order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiormq import exceptions as amqp_errors

from .. import defaults
from ..connection._session import Session
from ..leases._leases import LeaseSettings, dead_queue, lease_queue

__all__ = (
    "KIWIPY09_TASK_QUEUE",
    "dead_queue_arguments",
    "declare_lease_queue",
    "declare_task_queue",
    "broker_version",
    "ensure_queue",
    "lease_queue_arguments",
    "task_queue_arguments",
    "task_queue_durable",
)

_LOGGER = logging.getLogger("kiwipy.rmq.tasks")


def _quorum(options: Mapping[str, Any]) -> bool:
    return bool(options["task_queue_type"] == "quorum" and not options["task_queue_compat"])


def _testing(arguments: dict[str, Any], options: Mapping[str, Any], expires: int) -> None:
    if options["testing_mode"]:
        arguments["x-expires"] = max(expires, defaults.TEST_QUEUE_EXPIRES)


#: The arguments kiwipy 0.9 declares a task queue with (outside testing mode; in testing
#: mode ``x-expires`` :data:`~kiwipy.rmq.defaults.TEST_QUEUE_EXPIRES` is added).
KIWIPY09_TASK_QUEUE: Mapping[str, Any] = {"x-message-ttl": defaults.TASK_MESSAGE_TTL}


def task_queue_arguments(
    queue: str, options: Mapping[str, Any], broker_version: str = ""
) -> dict[str, Any]:
    """:returns: the arguments a *new* task queue is declared with (rules 2-4).

    :param broker_version: the RabbitMQ version (``server_properties['version']``), which
        decides how "no delivery limit" is said (rule 4).
    """
    if options["task_queue_compat"]:
        arguments: dict[str, Any] = dict(KIWIPY09_TASK_QUEUE)
    else:
        arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_queue(queue)}
        if options["task_message_ttl"]:
            arguments["x-message-ttl"] = int(options["task_message_ttl"])
        if _quorum(options):
            arguments.update(_AT_LEAST_ONCE)
            limit = options["task_delivery_limit"]
            if limit is not None:
                arguments["x-delivery-limit"] = int(limit)
            elif _major(broker_version) >= 4:
                arguments["x-delivery-limit"] = -1  # no limit (4.0 would set 20)
    _testing(arguments, options, defaults.TEST_QUEUE_EXPIRES)
    return arguments


def task_queue_durable(options: Mapping[str, Any]) -> bool:
    """:returns: whether a *new* task queue is durable: kiwipy 0.9 declares it transient in
    testing mode, so with ``task_queue_compat`` this library does too (rule 3)."""
    return not (options["task_queue_compat"] and options["testing_mode"])


#: A quorum queue that dead-letters at least once (rule 4); reject-publish is required.
_AT_LEAST_ONCE = {
    "x-queue-type": "quorum",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def _major(version: str) -> int:
    """:returns: the major number of a RabbitMQ *version* (0 if unknown)."""
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def broker_version(session: Session) -> str:
    """:returns: the version the broker announced, ``''`` if unknown (not connected)."""
    connection = session.live_connection()
    properties = getattr(connection, "server_properties", None) or {}
    version = properties.get("version", "")
    return version.decode() if isinstance(version, bytes) else str(version)


def dead_queue_arguments(options: Mapping[str, Any]) -> dict[str, Any]:
    """:returns: the arguments a new ``<queue>.dead`` is declared with."""
    arguments: dict[str, Any] = {"x-queue-type": "quorum"} if _quorum(options) else {}
    _testing(arguments, options, defaults.TEST_QUEUE_EXPIRES)
    return arguments


def lease_queue_arguments(queue: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """:returns: the arguments a new ``<queue>.leases`` is declared with (rule 5)."""
    settings = LeaseSettings.from_options(options)
    arguments: dict[str, Any] = {
        "x-message-ttl": settings.interval_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
    }
    if _quorum(options):
        arguments.update(_AT_LEAST_ONCE)
    # Copies only pass through; parking declares it again in testing mode (see
    # declare_lease_queue), so it lives while leases cycle and vanishes after.
    _testing(arguments, options, 4 * settings.interval_ms)
    return arguments


async def ensure_queue(
    session: Session, name: str, arguments: dict[str, Any], durable: bool = True
) -> None:
    """Declare the queue *name* with *arguments* unless it exists (rule 1)."""
    if await session.passive_declare(name) is not None:
        return
    try:
        await session.call(
            f"declaring queue {name!r}",
            "queue_declare",
            queue=name,
            durable=durable,
            arguments=arguments,
        )
    except amqp_errors.ChannelPreconditionFailed:
        _LOGGER.info("queue %s was just declared elsewhere; using it as it is", name)


async def declare_task_queue(session: Session, exchange: str, queue: str) -> None:
    """Make sure *queue* exists, bound to *exchange*, with its ``.dead`` queue."""
    options = session.options
    await ensure_queue(session, dead_queue(queue), dead_queue_arguments(options))
    arguments = task_queue_arguments(queue, options, broker_version(session))
    await ensure_queue(session, queue, arguments, task_queue_durable(options))
    await session.call(
        "binding a task queue", "queue_bind", queue=queue, exchange=exchange, routing_key=queue
    )


async def declare_lease_queue(session: Session, queue: str) -> None:
    """Make sure ``<queue>.leases`` exists before a copy is parked there.

    In testing mode it is declared again each time (which resets its ``x-expires``); a lease
    queue declared elsewhere with another interval is used as it is.
    """
    name = lease_queue(queue)
    arguments = lease_queue_arguments(queue, session.options)
    if not session.options["testing_mode"]:
        await ensure_queue(session, name, arguments)
        return
    try:
        await session.call(
            "declaring a lease queue",
            "queue_declare",
            queue=name,
            durable=True,
            arguments=arguments,
        )
    except amqp_errors.ChannelPreconditionFailed as exc:
        _LOGGER.debug("lease queue %s exists with other arguments (%s)", name, exc)
