"""Follow one task from a script (or a notebook cell) to the worker that ran it, with
OpenTelemetry.

Needs the OpenTelemetry SDK (``pip install 'kiwipy[otel]' opentelemetry-sdk``). It runs on
the in-process transport as it is::

    python examples/trace_task.py

and over RabbitMQ with ``KIWIPY_URL=amqp://guest:guest@127.0.0.1:5672/``. Every span is
printed as JSON by the SDK's console exporter as it ends; at the end the trace is printed as
a tree: the script's span, kiwipy's ``send`` span (PRODUCER), the worker's ``process`` span
(CONSUMER, the same trace) and the worker's own span inside it.
"""

import os
import time

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kiwipy

URL = os.environ.get("KIWIPY_URL", "memory://trace-example")
PREFIX = os.environ.get("KIWIPY_EXAMPLE_PREFIX", "trace-example")

# Configure the SDK once, before sending: kiwipy uses the global tracer provider.
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
collected = InMemorySpanExporter()  # only to print the tree at the end
provider.add_span_processor(SimpleSpanProcessor(collected))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("trace-example")


def simulate(_comm, task):
    # The worker's own span nests under kiwipy's "process" span: it is current here.
    with tracer.start_as_current_span("simulate") as span:
        span.set_attribute("task.steps", task["steps"])
        return sum(range(task["steps"]))


options = {
    "message_exchange": f"{PREFIX}.messages",
    "task_exchange": f"{PREFIX}.tasks",
    "task_queue": f"{PREFIX}.tasks",
}
with kiwipy.connect(URL, **options) as worker, kiwipy.connect(URL, **options) as client:
    worker.add_task_subscriber(simulate)
    with tracer.start_as_current_span("notebook cell"):
        result = client.task_send({"steps": 10}).result(timeout=10)
        print(f"result: {result}")  # one write: the span exporter prints from other threads

    # The worker's span ends once its reply is sent, maybe just after the result arrived.
    deadline = time.monotonic() + 10
    while len(collected.get_finished_spans()) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)


def show(span, spans, depth=0):
    kind = span.kind.name if span.kind != trace.SpanKind.INTERNAL else "-"
    print(f"{'  ' * depth}{span.name} [{kind}]")
    for child in spans:
        if child.parent is not None and child.parent.span_id == span.context.span_id:
            show(child, spans, depth + 1)


spans = sorted(collected.get_finished_spans(), key=lambda s: s.start_time)
print("trace:")
for root in (span for span in spans if span.parent is None):
    show(root, spans, 1)
