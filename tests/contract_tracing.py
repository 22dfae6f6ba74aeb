"""OpenTelemetry traces and metrics (issue 17), written once for every transport.

A test module subclasses :class:`TracingContract`, sets ``system`` (the transport's
``messaging.system``) and defines the same ``transport`` fixture as for
:class:`tests.contract.CommunicatorContract`. The OpenTelemetry SDK is installed as the
global tracer and meter provider the first time a test asks for :func:`otel` (the global
providers can be set only once per process), with an in-memory span exporter and an
in-memory metric reader; each test finds its own spans by the trace id of a root span it
starts around its send.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from typing import Any, Callable, ClassVar, NamedTuple

import pytest

import kiwipy
from tests.contract import TIMEOUT, ContractTransport, Inbox, settle

pytest.importorskip("opentelemetry.sdk", reason="the dev extra installs opentelemetry-sdk")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler, SamplingResult

__all__ = ("Otel", "TracingContract", "otel_sdk", "stop_sampling")


class Otel(NamedTuple):
    """The in-memory exporter and metric reader of the process's global SDK."""

    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    async def trace_of(
        self,
        root: Any,
        kind: str,
        count: int = 2,
        until: Callable[[list[ReadableSpan]], bool] = lambda _spans: True,
    ) -> list[ReadableSpan]:
        """:returns: the *count* (or more) kiwipy spans of message *kind* in the trace of
        *root* (and for which *until* is true), waiting up to
        :data:`~tests.contract.TIMEOUT` seconds (a consumer span ends once the reply is sent
        and the task acknowledged, possibly after the sender had it)."""
        trace_id = root.get_span_context().trace_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            found = [
                span
                for span in self.spans.get_finished_spans()
                if span.context.trace_id == trace_id
                and (span.attributes or {}).get("kiwipy.message.kind") == kind
            ]
            if (len(found) >= count and until(found)) or loop.time() > deadline:
                return found
            await asyncio.sleep(0.01)

    def metric_points(self, name: str) -> list[Any]:
        """:returns: every data point of the metric *name* collected now."""
        data = self.metrics.get_metrics_data()
        points: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points


class _Switch(Sampler):
    """Samples only while a test that reads spans runs (:func:`otel_sdk` turns it on,
    ``tests/conftest.py`` off after each test): the global provider cannot be removed once
    set, and the other tests should not pay for recording spans."""

    on = False

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return (ALWAYS_ON if self.on else ALWAYS_OFF).should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "on while a tracing test runs"


_SWITCH = _Switch()


def otel_sdk() -> Otel:
    """The SDK as the global providers (installed once per process), recording spans until
    the end of the current test."""
    _SWITCH.on = True
    return _install()


def stop_sampling() -> None:
    """Record no more spans (called after each test)."""
    _SWITCH.on = False


@functools.cache
def _install() -> Otel:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=_SWITCH)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    # One provider for the whole run: every test's queue names are new attribute sets, more
    # than the SDK's default of 2,000 streams per instrument (then measurements go to an
    # overflow stream and a later test would not find its own).
    unlimited = View(instrument_name="*", aggregation_cardinality_limit=10_000_000)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader], views=[unlimited]))
    return Otel(exporter, reader)


def _taken(spans: list[ReadableSpan]) -> bool:
    """Whether a consumer span that did not reject the message has ended."""
    return any(
        span.kind == trace.SpanKind.CONSUMER
        and all(event.name != "kiwipy.rejected" for event in span.events)
        for span in spans
    )


def _one(spans: list[ReadableSpan], kind: trace.SpanKind) -> ReadableSpan:
    matching = [span for span in spans if span.kind == kind]
    assert len(matching) == 1, [(s.name, s.kind) for s in spans]
    return matching[0]


class TracingContract:
    """Issue 17's tracing tests; see the module doc."""

    system: ClassVar[str]
    #: The default task queue's name, given the test's namespace.
    queue_format: ClassVar[str] = "{namespace}.tasks"

    @pytest.fixture
    def otel(self) -> Iterator[Otel]:
        sdk = otel_sdk()
        yield sdk

    @pytest.fixture
    async def comm(self, transport: ContractTransport) -> Any:
        return await transport.connect()

    def _queue(self, transport: ContractTransport) -> str:
        return self.queue_format.format(namespace=transport.namespace)

    def _check_pair(
        self, spans: list[ReadableSpan], destination: str
    ) -> tuple[ReadableSpan, ReadableSpan]:
        producer = _one(spans, trace.SpanKind.PRODUCER)
        consumer = _one(spans, trace.SpanKind.CONSUMER)
        assert consumer.context.trace_id == producer.context.trace_id
        assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
        assert producer.name == f"send {destination}"
        assert consumer.name == f"process {destination}"
        for span, operation in ((producer, "send"), (consumer, "process")):
            attributes = dict(span.attributes or {})
            assert attributes["messaging.system"] == self.system
            assert attributes["messaging.destination.name"] == destination
            assert attributes["messaging.operation.type"] == operation
            assert attributes["messaging.operation.name"] == operation
        return producer, consumer

    async def test_task_is_one_trace(
        self, otel: Otel, comm: Any, transport: ContractTransport
    ) -> None:
        tracer = trace.get_tracer("test")
        await comm.add_task_subscriber(lambda _c, task: task * 2)
        with tracer.start_as_current_span("root") as root:
            assert await settle(await comm.task_send(21)) == 42
        producer, consumer = self._check_pair(
            await otel.trace_of(root, "task"), self._queue(transport)
        )
        assert producer.parent is not None and producer.parent.span_id == root.context.span_id
        attributes = dict(consumer.attributes or {})
        conversation = attributes["messaging.message.conversation_id"]
        assert conversation == dict(producer.attributes or {})["messaging.message.conversation_id"]
        sizes = {
            dict(s.attributes or {}).get("messaging.message.body.size")
            for s in (producer, consumer)
        }
        assert len(sizes) == 1 and sizes.pop() > 0  # the same encoded body on both sides
        if self.system == "rabbitmq":  # memory:// messages have no message id
            assert attributes["messaging.message.id"]
        assert consumer.status.status_code != trace.StatusCode.ERROR

    async def test_rpc_is_one_trace(
        self, otel: Otel, comm: Any, transport: ContractTransport
    ) -> None:
        tracer = trace.get_tracer("test")
        identifier = transport.name("traced")
        await comm.add_rpc_subscriber(lambda _c, msg: msg + 1, identifier)
        with tracer.start_as_current_span("root") as root:
            assert await settle(await comm.rpc_send(identifier, 1)) == 2
        spans = await otel.trace_of(root, "rpc")
        destination = dict(_one(spans, trace.SpanKind.PRODUCER).attributes or {})
        self._check_pair(spans, str(destination["messaging.destination.name"]))
        assert identifier in str(destination["messaging.destination.name"])

    async def test_broadcast_is_one_trace(self, otel: Otel, comm: Any) -> None:
        tracer = trace.get_tracer("test")
        heard = Inbox()
        await comm.add_broadcast_subscriber(lambda _c, body, *_rest: heard.put(body))
        with tracer.start_as_current_span("root") as root:
            await comm.broadcast_send("hello")
        assert await heard.wait_for(1) == ["hello"]
        spans = await otel.trace_of(root, "broadcast")
        destination = dict(_one(spans, trace.SpanKind.PRODUCER).attributes or {})
        self._check_pair(spans, str(destination["messaging.destination.name"]))

    async def test_failing_task_sets_error_status(
        self, otel: Otel, comm: Any, transport: ContractTransport
    ) -> None:
        def fail(_c: Any, task: Any) -> None:
            raise RuntimeError(f"task {task} failed")

        tracer = trace.get_tracer("test")
        await comm.add_task_subscriber(fail)
        with tracer.start_as_current_span("root") as root:
            with pytest.raises(kiwipy.RemoteException):
                await settle(await comm.task_send(7))
        spans = await otel.trace_of(root, "task")
        _producer, consumer = self._check_pair(spans, self._queue(transport))
        assert consumer.status.status_code == trace.StatusCode.ERROR
        assert "task 7 failed" in (consumer.status.description or "")
        assert [event.name for event in consumer.events] == ["exception"]
        failures = [
            point
            for point in otel.metric_points("messaging.client.consumed.messages")
            if point.attributes.get("messaging.destination.name") == self._queue(transport)
        ]
        assert [point.attributes.get("error.type") for point in failures] == ["RuntimeError"]

    async def test_rejection_and_redelivery_are_span_events(
        self, otel: Otel, transport: ContractTransport
    ) -> None:
        requester, picky, worker = [await transport.connect() for _ in range(3)]
        seen = Inbox()

        def reject(_c: Any, task: Any) -> None:
            seen.put(task)
            raise kiwipy.TaskRejected

        tracer = trace.get_tracer("test")
        await picky.add_task_subscriber(reject)
        with tracer.start_as_current_span("root") as root:
            first = await requester.task_send("job")
        await seen.wait_for(1)
        await worker.add_task_subscriber(lambda _c, task: f"{task} done")
        assert await settle(first) == "job done"
        spans = await otel.trace_of(root, "task", count=3, until=_taken)
        producer = _one(spans, trace.SpanKind.PRODUCER)
        consumers = [span for span in spans if span.kind == trace.SpanKind.CONSUMER]
        assert all(span.parent.span_id == producer.context.span_id for span in consumers)
        events = [[event.name for event in span.events] for span in consumers]
        assert ["kiwipy.rejected"] in events  # picky's first (it may get it again)
        taken = [names for names in events if "kiwipy.rejected" not in names]
        assert taken == [["kiwipy.redelivery"]]  # the worker's: it was given back before

    async def test_subscriber_spans_nest_under_the_consumer_span(
        self, otel: Otel, comm: Any
    ) -> None:
        tracer = trace.get_tracer("test")

        def work(_c: Any, task: Any) -> Any:
            with tracer.start_as_current_span("user work"):
                return task

        await comm.add_task_subscriber(work)
        with tracer.start_as_current_span("root") as root:
            assert await settle(await comm.task_send("x")) == "x"
        consumer = _one(await otel.trace_of(root, "task"), trace.SpanKind.CONSUMER)
        trace_id = root.get_span_context().trace_id
        user = [
            span
            for span in otel.spans.get_finished_spans()
            if span.name == "user work" and span.context.trace_id == trace_id
        ]
        assert len(user) == 1
        assert user[0].parent is not None and user[0].parent.span_id == consumer.context.span_id

    async def test_sent_and_consumed_messages_are_counted(
        self, otel: Otel, comm: Any, transport: ContractTransport
    ) -> None:
        tracer = trace.get_tracer("test")
        await comm.add_task_subscriber(lambda _c, task: task)
        with tracer.start_as_current_span("root") as root:
            assert await settle(await comm.task_send(1)) == 1
        await otel.trace_of(root, "task")
        queue = self._queue(transport)
        for name in (
            "messaging.client.sent.messages",
            "messaging.client.consumed.messages",
            "messaging.client.operation.duration",
        ):
            ours = [
                point
                for point in otel.metric_points(name)
                if point.attributes.get("messaging.destination.name") == queue
            ]
            assert ours, name
            assert all(point.attributes["messaging.system"] == self.system for point in ours)
        waiting = otel.metric_points("kiwipy.replies.waiting")
        assert any(point.attributes["messaging.system"] == self.system for point in waiting)
