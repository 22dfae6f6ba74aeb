"""What a transport supplies to the shared core (:mod:`kiwipy.core`): a :class:`Broker`.

The core (its communicator, task queues and pull-mode tasks) decides everything a subscriber's
call ends with, replies before it acknowledges, and waits for replies; a broker only stores,
delivers, acknowledges and wakes. The in-process broker (:class:`kiwipy.memory.MemoryBroker`)
is the smallest one; the SQLite broker (:mod:`kiwipy.sqlite`) keeps the same objects in a
file that any number of processes share.

Rules every broker keeps (the contract suite checks them on each):

1. A broker never runs user code and never waits for a loop: it posts each call it makes to
   the receiving :class:`Connection`'s loop with ``call_soon_threadsafe`` (:func:`post`).
   A broadcast to a connection with a ``direct_broadcast`` hook (a thread communicator's)
   is offered to the hook first, on the broker's thread: it hands the subscribers' calls to
   their worker threads itself, or declines.
2. A task message is in exactly one place: ready in its queue, out in one unsettled
   :class:`Delivery`, or gone (acknowledged or dead-lettered).
3. Closing a connection (or losing it) puts its unsettled deliveries back in their queues in
   their original places, releases its RPC identities and wakes its pending pulls.
4. A message a consumer rejected is not offered to that consumer again until it is
   refreshed, so a task every subscriber rejects waits for another consumer.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Protocol

from ..encoders import Encoder

__all__ = ("Broker", "Connection", "Consumer", "Delivery", "Message", "Payload", "Post", "post")


class Payload(NamedTuple):
    """A message body: bytes made by *encoder*, or the object itself when *encoder* is None;
    *headers* carry the trace context (:mod:`kiwipy._tracing`), as AMQP headers do."""

    data: Any
    encoder: Optional[Encoder]
    headers: Optional[dict[str, str]] = None


@dataclasses.dataclass(eq=False)
class Message:
    """A message in flight: its body, correlation id and the connection replies go to."""

    payload: Payload
    correlation_id: str
    reply_to: Optional[object] = None  # where replies go: only the broker reads it
    seq: int = 0
    rejected_by: set[int] = dataclasses.field(default_factory=set)
    redelivered: bool = False  # given back once at least (AMQP's redelivered flag)
    deadline: Optional[float] = None  # epoch seconds after which it is not started
    cancels: Optional[str] = None  # a cancel of the RPC with this correlation id (no body)
    cancelled: bool = False  # a task its sender cancelled: not started any more


@dataclasses.dataclass(eq=False)
class Delivery:
    """A task message handed to a connection, until it is acked, requeued or dead-lettered."""

    message: Message
    queue: str
    connection: Connection
    consumer: Optional[Consumer]
    settled: bool = False


@dataclasses.dataclass(eq=False)
class Consumer:
    """A push consumer of one queue; ``prefetch`` 0 means unlimited unsettled deliveries."""

    tag: int
    queue: str
    connection: Connection
    callback: Callable[[Delivery], None]
    prefetch: int
    inflight: int = 0
    cancelled: bool = False

    def has_room(self) -> bool:
        return not self.cancelled and (self.prefetch <= 0 or self.inflight < self.prefetch)


@dataclasses.dataclass(eq=False)
class Connection:
    """One communicator's session: what it receives, and everything closing it releases."""

    loop: asyncio.AbstractEventLoop
    on_reply: Callable[[str, Payload], None]
    on_broadcast: Callable[[Payload], None]
    consumers: list[Consumer] = dataclasses.field(default_factory=list)
    unsettled: set[Delivery] = dataclasses.field(default_factory=set)
    rpc: dict[str, Callable[[str, Message], None]] = dataclasses.field(default_factory=dict)
    waiters: list[tuple[str, Callable[[], None]]] = dataclasses.field(default_factory=list)
    closed: bool = False
    #: ``direct_broadcast(payload)``: takes a broadcast on the broker's thread instead of
    #: ``on_broadcast`` on the loop, if it returns true (rule 1).
    direct_broadcast: Optional[Callable[[Payload], bool]] = None


#: A call a broker makes on a connection's loop: ``(connection, function, arguments)``.
Post = tuple["Connection", Callable[..., None], tuple[Any, ...]]


def post(posts: list[Post]) -> list[Connection]:
    """Post each call to its connection's loop (rule 1), in order; a broadcast goes to a
    connection's ``direct_broadcast`` first.

    :returns: the connections whose loop is closed (their communicators are gone: the
        broker treats them as lost), in the order met.
    """
    lost: list[Connection] = []
    for connection, fn, args in posts:
        direct = connection.direct_broadcast
        if direct is not None and fn is connection.on_broadcast and direct(*args):
            continue
        try:
            connection.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed
            lost.append(connection)
    return lost


class Broker(Protocol):
    """The operations the core asks of a transport. Each may be called from any thread; none
    blocks for longer than its storage takes."""

    def connect(
        self,
        loop: asyncio.AbstractEventLoop,
        on_reply: Callable[[str, Payload], None],
        on_broadcast: Callable[[Payload], None],
    ) -> Connection:
        """:returns: a new connection whose callbacks are posted to *loop*."""

    def close(self, connection: Connection) -> None:
        """Release everything *connection* holds (rule 3)."""

    def publish(self, queue: str, message: Message) -> None:
        """Store *message* at the end of *queue* (declared on first use); it is durable, as
        far as the broker is, when this returns."""

    def publish_many(self, queue: str, messages: list[Message]) -> None:
        """:meth:`publish` each of *messages*, all or none."""

    def cancel_task(self, queue: str, message: Message) -> None:
        """Its sender cancelled the task *message*: a worker that takes it does not start it."""

    def consume(
        self,
        connection: Connection,
        queue: str,
        prefetch: int,
        callback: Callable[[Delivery], None],
    ) -> Consumer:
        """Post ``callback(delivery)`` for messages of *queue*, at most *prefetch* unsettled
        at a time (0: no limit)."""

    def cancel(self, consumer: Consumer) -> None:
        """Stop delivering to *consumer*; its unsettled deliveries stay with its connection."""

    def refresh(self, consumer: Consumer) -> None:
        """Forget what *consumer* rejected (rule 4) and offer it again."""

    def get(
        self, connection: Connection, queue: str, notify: Optional[Callable[[], None]] = None
    ) -> Optional[Delivery]:
        """Take the first ready message of *queue*; if there is none and *notify* is given,
        post ``notify()`` once when one may be ready.

        :raises CommunicatorClosed: if *connection* is closed.
        """

    def forget_waiter(self, connection: Connection, notify: Callable[[], None]) -> None:
        """Withdraw a *notify* registered by :meth:`get`."""

    def ack(self, delivery: Delivery) -> None:
        """The message is done with (no-op if it was already settled)."""

    def requeue(self, delivery: Delivery, reject: bool = False) -> None:
        """Put the message back in its original place; *reject*: its consumer declined it."""

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Remove the message from circulation, kept with *reason* for inspection."""

    def bind_rpc(
        self, connection: Connection, key: str, callback: Callable[[str, Message], None]
    ) -> None:
        """Route RPCs for *key* to ``callback(key, message)`` on *connection*'s loop.

        :raises DuplicateSubscriberIdentifier: if any connection holds *key*.
        """

    def unbind_rpc(self, connection: Connection, key: str) -> None:
        """Stop routing RPCs for *key* to *connection*."""

    def send_rpc(self, key: str, message: Message) -> None:
        """Hand *message* to whoever holds *key*.

        :raises UnroutableError: if nobody does.
        """

    def send_reply(
        self, reply_to: object, correlation_id: str, payload: Payload, final: bool = True
    ) -> None:
        """Deliver a reply to the *reply_to* of a message (dropped if that is gone); *final*
        is false for a ``pending`` reply (more will come for the same request)."""

    def broadcast(self, payload: Payload) -> None:
        """Deliver a broadcast to every open connection."""
