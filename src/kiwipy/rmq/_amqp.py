"""The boundary between aiormq/aio-pika and kiwipy: error translation and message properties.

Rule: an aiormq/aio-pika exception never leaves ``kiwipy.rmq`` untranslated from a send; it is
mapped here, once, with ``raise X(...) from exc``. Two translated errors also keep the type
that kiwipy 0.9 let through, so code written against it still catches them:

* :class:`UnroutableDelivery` is a :class:`~kiwipy.UnroutableError` *and* an
  :class:`aio_pika.exceptions.DeliveryError` (kiwipy 0.9's ``RmqTaskPublisher.task_send``
  raised the latter; its own tests expect it);
* :class:`ConnectionGone` is a :class:`~kiwipy.ConnectionLost` *and* an
  :class:`aio_pika.exceptions.ChannelInvalidStateError` (plumpy catches that one around
  ``broadcast_send``).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Optional

import aiormq
import aiormq.abc
from aiormq import exceptions as amqp_errors
from pamqp import commands as spec

from .. import exceptions

__all__ = (
    "SEND_ERRORS",
    "ConnectionGone",
    "UnroutableDelivery",
    "exchange_arguments",
    "is_channel_error",
    "new_correlation_id",
    "properties",
    "translate",
)

#: What aiormq may raise from a channel operation when the channel or connection is in trouble.
SEND_ERRORS = (
    amqp_errors.AMQPError,
    amqp_errors.ChannelInvalidStateError,
    ConnectionError,
    asyncio.TimeoutError,
)


class UnroutableDelivery(exceptions.UnroutableError, amqp_errors.DeliveryError):
    """No queue is bound for a mandatory message (``basic.return``)."""

    def __init__(self, text: str, message: Optional[aiormq.abc.DeliveredMessage] = None) -> None:
        Exception.__init__(self, text)
        self.message = message
        self.frame = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return str(self.args[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r})"


class ConnectionGone(exceptions.ConnectionLost, amqp_errors.ChannelInvalidStateError):
    """The channel or connection failed, so the operation is not known to have happened."""


def translate(exc: BaseException, what: str) -> exceptions.KiwiError:
    """:returns: the kiwipy error for the aiormq error *exc* raised while doing *what*."""
    if isinstance(exc, amqp_errors.PublishError):
        # kiwipy 0.9's text: "('NO_ROUTE', '[rpc].nobody')"
        return UnroutableDelivery(str(exc.args), exc.message)
    if isinstance(exc, amqp_errors.DeliveryError):
        return exceptions.PublishNacked(f"the broker refused {what} (basic.nack)")
    if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
        return UnroutableDelivery(f"{what}: {exc}")
    return ConnectionGone(f"{what} failed: {type(exc).__name__}: {exc}")


def exchange_arguments(
    exchange_params: Optional[dict[str, Any]], testing_mode: bool
) -> dict[str, Any]:
    """:returns: aiormq ``exchange_declare`` arguments: kiwipy 0.9's topic exchange, not
    durable, auto-deleting only in testing mode; *exchange_params* (aio-pika's
    ``declare_exchange`` keywords, as kiwipy 0.9 took them) override them."""
    params: dict[str, Any] = {"type": "topic", "durable": False}
    params.update(exchange_params or {})
    if testing_mode:
        params.setdefault("auto_delete", True)
    kind = params.pop("type")
    params["exchange_type"] = getattr(kind, "value", kind)
    return params


def new_correlation_id() -> str:
    """:returns: a correlation id as kiwipy 0.9 makes them (``str(uuid4())``)."""
    return str(uuid.uuid4())


def properties(
    *,
    persistent: bool = False,
    correlation_id: Optional[str] = None,
    reply_to: Optional[str] = None,
    content_type: Optional[str] = None,
    headers: Optional[dict[str, Any]] = None,
) -> spec.Basic.Properties:
    """:returns: AMQP properties as kiwipy 0.9 sets them (delivery mode 2 for tasks, 1
    otherwise); ``content_type`` is set only for encoders that have one (not YAML)."""
    return spec.Basic.Properties(
        delivery_mode=2 if persistent else 1,
        correlation_id=correlation_id,
        reply_to=reply_to,
        content_type=content_type,
        headers=headers,
        priority=0,
    )


def is_channel_error(exc: Optional[BaseException]) -> bool:
    """:returns: whether *exc* closed only a channel (the broker's ``channel.close``), so the
    connection is still usable."""
    return (
        isinstance(exc, amqp_errors.ChannelClosed) and getattr(exc, "args", (None,))[0] is not None
    )
