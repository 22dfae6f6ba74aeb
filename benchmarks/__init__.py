"""The kiwipy benchmark suite: ``python -m benchmarks`` (see benchmarks/README.md).

It compares this library's thread and asyncio communicators with kiwipy 0.9 (run from its
own virtual environment) and with plain pika and aio-pika clients, against one broker, in
one run, each measurement in a fresh process. Timings live here and never in the tests.
"""

import os
import sys

#: Set to ``1`` to leave OpenTelemetry importable in the measurements. By default every
#: measurement process (children and their peers, which all import this package first) runs
#: kiwipy as installed without the ``kiwipy[otel]`` extra, like kiwipy 0.9 in its own venv
#: and like aiida-core installs it: ``.venv`` has the SDK only because the tests need it.
#: ``python -m benchmarks --tracing`` measures what tracing costs.
OTEL_ENV = "KIWIPY_BENCH_OTEL"

if os.environ.get(OTEL_ENV) != "1" and "opentelemetry" not in sys.modules:
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]
