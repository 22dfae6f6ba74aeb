"""Take tasks from the task queue: kiwipy's 'worker' example.

Start several of them: each task goes to one worker only::

    python examples/worker.py            # until Ctrl-C
    python examples/worker.py --count 2  # do two tasks, then exit

A task is a string; the worker sleeps one second per dot in it and returns the string. The
broker URL comes from ``KIWIPY_URL`` (default: the local RabbitMQ); set
``KIWIPY_EXAMPLE_PREFIX`` to give the queue and exchanges names of their own.
"""

import argparse
import os
import threading
import time

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, help="exit after this many tasks")
    args = parser.parse_args()

    done_tasks = []
    done = threading.Event()

    def callback(_comm, task):
        print(f" [x] Received {task!r}", flush=True)
        time.sleep(task.count("."))
        print(" [x] Done", flush=True)
        done_tasks.append(task)
        if args.count is not None and len(done_tasks) >= args.count:
            done.set()
        return task

    with connect() as comm:
        print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)
        comm.add_task_subscriber(callback)
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        time.sleep(0.5)  # let the last result leave before the connection closes


if __name__ == "__main__":
    main()
