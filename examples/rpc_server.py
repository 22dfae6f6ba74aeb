"""Answer 'fib' RPCs: the RPC server of kiwipy's classic examples.

Run it, then run ``rpc_client.py`` in another terminal::

    python examples/rpc_server.py            # until Ctrl-C
    python examples/rpc_server.py --count 1  # answer one call, then exit

The broker URL comes from ``KIWIPY_URL`` (default: the local RabbitMQ). If
``KIWIPY_EXAMPLE_PREFIX`` is set, the exchanges and the task queue get names starting with it,
so several runs on one broker do not see each other's messages. Written against kiwipy 0.9's
public API, so it runs unchanged with kiwipy 0.9.
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


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, help="exit after answering this many calls")
    args = parser.parse_args()

    answered = []
    done = threading.Event()

    def on_fib(_comm, n):
        print(f" [.] fib({n})", flush=True)
        result = fib(n)
        answered.append(n)
        if args.count is not None and len(answered) >= args.count:
            done.set()
        return result

    with connect() as comm:
        comm.add_rpc_subscriber(on_fib, "fib")
        print(" [x] Awaiting RPC requests", flush=True)
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        time.sleep(0.5)  # let the last reply leave before the connection closes


if __name__ == "__main__":
    main()
