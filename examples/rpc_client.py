"""Call the 'fib' RPC of ``rpc_server.py`` and print the answer.

::

    python examples/rpc_client.py      # fib(30)
    python examples/rpc_client.py 10   # fib(10)

The broker URL comes from ``KIWIPY_URL`` (default: the local RabbitMQ); set
``KIWIPY_EXAMPLE_PREFIX`` to the same value as for the server.
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
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    with connect() as comm:
        print(f" [x] Requesting fib({n})", flush=True)
        try:
            response = comm.rpc_send("fib", n).result(timeout=30)
        except kiwipy.UnroutableError:
            sys.exit("Nobody answers 'fib': start examples/rpc_server.py first")
        print(f" [.] Got {response}", flush=True)


if __name__ == "__main__":
    main()
