"""Default names and settings of the RabbitMQ transport (kiwipy 0.9's values unless noted)."""

from __future__ import annotations

import functools

import yaml

__all__ = (
    "BROADCAST_TOPIC",
    "DECODER",
    "ENCODER",
    "MESSAGE_EXCHANGE",
    "MESSAGE_TTL",
    "QUEUE_EXPIRES",
    "REPLY_QUEUE_EXPIRES",
    "RPC_TOPIC",
    "SECONDS_TO_MILLISECONDS",
    "TASK_EXCHANGE",
    "TASK_FETCH_TIMEOUT",
    "TASK_MESSAGE_TTL",
    "TASK_PREFETCH_COUNT",
    "TASK_PREFETCH_SIZE",
    "TASK_QUEUE",
    "TEST_QUEUE_EXPIRES",
)

TASK_EXCHANGE = "kiwipy.tasks"
TASK_QUEUE = "kiwipy.tasks"
MESSAGE_EXCHANGE = "kiwipy.messages"
BROADCAST_TOPIC = "[broadcast]"
RPC_TOPIC = "[rpc]"

#: Per-message TTL of RPC and broadcast queues, in ms.
MESSAGE_TTL = 66000
QUEUE_EXPIRES = 60000
REPLY_QUEUE_EXPIRES = 60000
TEST_QUEUE_EXPIRES = 10000
#: The task-queue message TTL kiwipy 0.9 declares (7 days). This library declares new task
#: queues *without* a TTL (a requeued task keeps its original expiry, so old tasks vanished);
#: it is used only for queues declared in kiwipy 0.9 compatibility mode.
TASK_MESSAGE_TTL = 1000 * 60 * 60 * 24 * 7
TASK_PREFETCH_SIZE = 0
TASK_PREFETCH_COUNT = 0
TASK_FETCH_TIMEOUT = 5.0
SECONDS_TO_MILLISECONDS = 1000

# kiwipy 0.9's encoder/decoder callables, kept for code that passes them explicitly; the
# communicators use kiwipy.encoders.YAML, which produces the same bytes.
ENCODER = functools.partial(yaml.dump, encoding="utf-8")
DECODER = functools.partial(yaml.load, Loader=yaml.FullLoader)
