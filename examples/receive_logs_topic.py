"""Print the broadcasts whose subject matches: kiwipy's 'receive logs (topic)' example.

::

    python examples/receive_logs_topic.py "kern.*" "*.critical"
    python examples/receive_logs_topic.py --count 2 "kern.*"   # exit after two messages

Each argument is a wildcard subject filter (``*`` matches anything, including dots; a
pattern is matched from the start of the subject). A message is printed if any filter
matches; with no filter, every message is. The broker URL comes from ``KIWIPY_URL`` (default:
the local RabbitMQ); set ``KIWIPY_EXAMPLE_PREFIX`` to the same value as for the emitter.
"""

import argparse
import os
import threading

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
    parser.add_argument("filters", nargs="*", metavar="SUBJECT", help="wildcard subject filter")
    parser.add_argument("--count", type=int, help="exit after this many messages")
    args = parser.parse_args()

    received = []
    done = threading.Event()

    def callback(_comm, body, sender, subject, correlation_id):
        print(f" [x] {subject!r}:{body!r}", flush=True)
        received.append(body)
        if args.count is not None and len(received) >= args.count:
            done.set()

    with connect() as comm:
        listener = kiwipy.BroadcastFilter(callback)
        for subject_filter in args.filters:
            listener.add_subject_filter(subject_filter)
        comm.add_broadcast_subscriber(listener)
        print(" [*] Waiting for logs. To exit press CTRL+C", flush=True)
        try:
            done.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
