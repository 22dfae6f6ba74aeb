"""The kiwipy benchmark suite: ``python -m benchmarks`` (see benchmarks/README.md).

It compares this library's thread and asyncio communicators with kiwipy 0.9 (run from its
own virtual environment) and with plain pika and aio-pika clients, against one broker, in
one run, each measurement in a fresh process. Timings live here and never in the tests.
"""
