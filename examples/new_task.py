"""Send a task to the task queue and print its result: kiwipy's 'new task' example.

::

    python examples/new_task.py "Hello World..."

The worker (``worker.py``) pretends to work one second per dot in the message, and sends the
message back as the result. The broker URL comes from ``KIWIPY_URL`` (default: the local
RabbitMQ); set ``KIWIPY_EXAMPLE_PREFIX`` to the same value as for the worker.
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
    message = " ".join(sys.argv[1:]) or "Hello World!"
    with connect() as comm:
        print(f" [x] Sending {message!r}", flush=True)
        result = comm.task_send(message).result(timeout=60)
        print(f" [x] Result {result!r}", flush=True)


if __name__ == "__main__":
    main()
