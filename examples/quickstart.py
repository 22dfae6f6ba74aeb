"""kiwipy in thirty seconds: a task, an RPC and a broadcast between two communicators.

Runs as it is on the in-process transport (no broker needed)::

    python examples/quickstart.py

With ``KIWIPY_URL=amqp://guest:guest@127.0.0.1:5672/`` it runs over RabbitMQ instead.
"""

import os
import threading

import kiwipy

URL = os.environ.get("KIWIPY_URL", "memory://quickstart")

with kiwipy.connect(URL) as worker, kiwipy.connect(URL) as client:
    # A worker takes tasks from the shared task queue and answers RPCs sent to "greeter".
    worker.add_task_subscriber(lambda _comm, task: task * 2)
    worker.add_rpc_subscriber(lambda _comm, name: f"Hello, {name}!", "greeter")

    # Sends return futures; .result() waits for the other side's answer.
    print(client.task_send(21).result(timeout=10))  # 42
    print(client.rpc_send("greeter", "Ada").result(timeout=10))  # Hello, Ada!

    # Broadcasts go to every subscriber; a BroadcastFilter picks subjects by wildcard.
    heard = threading.Event()

    def on_news(_comm, body, sender, subject, correlation_id):
        print(f"{subject} from {sender}: {body}")  # job.7.finished from client: done
        heard.set()

    worker.add_broadcast_subscriber(kiwipy.BroadcastFilter(on_news, subject="job.*"))
    client.broadcast_send("done", sender="client", subject="job.7.finished")
    heard.wait(timeout=10)
