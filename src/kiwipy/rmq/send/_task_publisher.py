"""Sending tasks to one task queue and receiving their results: :class:`RmqTaskPublisher`
(re-exported by :mod:`kiwipy.rmq.tasks`, kiwipy 0.9's path for it).

A task is persistent and confirmed by the broker before :meth:`RmqTaskPublisher.task_send`
returns; a task whose future its sender cancels is announced to the queue's workers
(:mod:`kiwipy.rmq.receive._cancel`); batches are :mod:`kiwipy.rmq.send._batch`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable
from typing import Any, Optional

from ... import _deadlines, exceptions
from .. import defaults, protocol
from ..connection import _amqp
from ..connection._session import Session, codec_options
from ..messages import BasePublisherWithReplyQueue
from ..receive import _cancel
from ..receive._replies import ReplyQueue
from . import _batch, _offload, _outgoing

__all__ = ("RmqTaskPublisher",)

# the logger of kiwipy 0.9's module, where this class is imported from
_LOGGER = logging.getLogger("kiwipy.rmq.tasks")


class RmqTaskPublisher(BasePublisherWithReplyQueue):
    """Sends tasks to one task queue and receives their results.

    :param connection: an aio-pika connection (or a communicator's internal session).
    :param queue_name: the task queue (the routing key).
    :param exchange_name: the task exchange (kiwipy 0.9's default is the *message* exchange).
    :param confirm_deliveries: accepted for compatibility; every send is confirmed.
    :param replies: the reply queue to use (a communicator shares one), else its own.
    """

    def __init__(
        self,
        connection: Any,
        queue_name: str = defaults.TASK_QUEUE,
        exchange_name: str = defaults.MESSAGE_EXCHANGE,
        exchange_params: Optional[dict[str, Any]] = None,
        encoder: Any = defaults.ENCODER,
        decoder: Any = defaults.DECODER,
        confirm_deliveries: bool = True,
        testing_mode: bool = False,
        *,
        replies: Optional[ReplyQueue] = None,
    ) -> None:
        self._session = Session.of(connection, codec_options(encoder, decoder, testing_mode))
        self._owns_session = self._session is not connection
        self._queue_name = queue_name
        self._exchange_name = exchange_name
        self._exchange_params = _amqp.exchange_arguments(
            exchange_params, self._session.testing_mode
        )
        self._replies = replies or ReplyQueue(self._session, exchange_name)
        self._content_type = self._session.encoder.content_type
        self._cancelling: set[asyncio.Future[Any]] = set()  # cancel notices being sent

    async def connect(self) -> None:
        """Declare the exchange and start receiving replies."""
        await self._replies.bind(self._exchange_name, self._exchange_params)

    async def disconnect(self) -> None:
        """Stop receiving replies; waiting futures fail with CommunicatorClosed."""
        self._replies.fail_all(exceptions.CommunicatorClosed())
        await self._replies.close()
        if self._owns_session:
            await self._session.close()

    async def task_send(
        self, task: Any, no_reply: bool = False, *, timeout: Optional[float] = None
    ) -> Optional[asyncio.Future[Any]]:
        """Queue *task* (persistent, confirmed by the broker before this returns).

        :param timeout: seconds the task may take to finish: then the future fails with
            :class:`~kiwipy.DeadlineExceeded`, and a task not started by then never is (it
            is dead-lettered; :mod:`kiwipy._deadlines`). ``None``: no deadline.
        :returns: a future for the task's outcome, or ``None`` with *no_reply*.
        :raises UnroutableError: (also an ``aio_pika.exceptions.DeliveryError``) if no queue
            is bound for it.
        :raises MessageTooLarge: if it encodes to more than ``max_message_size``.
        """
        _LOGGER.debug("Sending task to %r (reply=%r): %r", self._queue_name, not no_reply, task)
        # large tasks are encoded off the loop (issue 6)
        timeout = _deadlines.check_timeout(timeout)
        body = await _offload.encode(self._session, protocol.encode_task(task, no_reply))
        message, correlation_id = _outgoing.task(self.target(), body, timeout)
        future = (
            None
            if no_reply
            else self._replies.expect(correlation_id, self._queue_name, None, message)
        )
        if future is not None:  # armed now, when the deadline in the message was computed
            self._replies.deadline(correlation_id, future, timeout)
        try:
            await self._session.publish(*message)
        except BaseException:
            self._replies.forget(correlation_id)
            if future is not None:
                future.cancel()  # nobody has it: no timer may fail it unseen
            raise
        if future is not None:
            future.add_done_callback(functools.partial(self._on_task_done, correlation_id))
        return future

    def _on_task_done(self, correlation_id: str, future: asyncio.Future[Any]) -> None:
        """A task whose future its sender cancelled is announced to the queue's workers, who
        do not start it any more (:mod:`kiwipy.rmq.receive._cancel`, with its limits)."""
        if not future.cancelled():
            return
        self._replies.forget(correlation_id)
        notice = _cancel.task_notice(self._exchange_name, self._queue_name, correlation_id)
        if notice is not None:
            sending = asyncio.ensure_future(self._session.publish(*notice, retry=False))
            self._cancelling.add(sending)
            sending.add_done_callback(self._notice_sent)

    def _notice_sent(self, sending: asyncio.Future[Any]) -> None:
        self._cancelling.discard(sending)
        if not sending.cancelled() and sending.exception() is not None:
            _LOGGER.warning("a task cancel was not announced: %s", sending.exception())

    async def task_send_many(
        self,
        tasks: Iterable[Any],
        no_reply: bool = False,
        *,
        timeout: Optional[float] = None,
        call_timeout: Optional[float] = None,
    ) -> list[Optional[asyncio.Future[Any]]]:
        """Queue *tasks* with many publishes in flight; see :mod:`kiwipy.rmq.send._batch`.

        :returns: once every task is confirmed, a reply future per task (``None`` entries
            with *no_reply*).
        :raises BatchSendError: if any task was not confirmed.
        """
        call_timeout = _deadlines.check_timeout(call_timeout)
        return await _batch.send_tasks(self.target(), tasks, no_reply, timeout, call_timeout)

    def target(self) -> _outgoing.TaskTarget:
        """Where this publisher's tasks go, for ``task_send_many`` and the thread facade's
        quick sends, which send them as :meth:`task_send` does (issue 6)."""
        return _outgoing.TaskTarget(
            self._session, self._exchange_name, self._queue_name, self._replies, self._content_type
        )
