"""Broadcast a log message with a subject: kiwipy's 'emit log (topic)' example.

::

    python examples/emit_log_topic.py kern.critical "A critical kernel error"

Listeners (``receive_logs_topic.py``) choose what they hear with wildcard subject filters.
The broker URL comes from ``KIWIPY_URL`` (default: the local RabbitMQ); set
``KIWIPY_EXAMPLE_PREFIX`` to the same value as for the listeners.
"""

import os
import sys

import kiwipy


def connect():
    url = os.environ.get("KIWIPY_URL", "amqp://guest:guest@127.0.0.1:5672/")
    prefix = os.environ.get("KIWIPY_EXAMPLE_PREFIX")
    if not prefix:
        return kiwipy.connect(url)
    return kiwipy.connect(
        url,
        message_exchange=prefix + ".messages",
        task_exchange=prefix + ".tasks",
        task_queue=prefix + ".tasks",
    )


def main():
    subject = sys.argv[1] if len(sys.argv) > 1 else "anonymous.info"
    message = " ".join(sys.argv[2:]) or "Hello World!"
    with connect() as comm:
        comm.broadcast_send(message, sender="emit_log_topic", subject=subject)
        print(f" [x] Sent {subject!r}:{message!r}", flush=True)


if __name__ == "__main__":
    main()
