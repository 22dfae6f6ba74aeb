"""A batch of the blocking communicator caught by an outage (issue 11, item 3): it is not cut
by the short call timeout, and what it wrote keeps its reply futures, which resolve once the
connection flows again.

The sender talks to the shared broker through a proxy that stalls; the worker is connected
directly, so what it gets is what the broker took.
"""

from __future__ import annotations

import time

import pytest

import kiwipy
from kiwipy import rmq

from ._scenario import SHARED_URL, Names, report
from .proxy import TcpProxy

pytestmark = pytest.mark.integration

CALL_TIMEOUT = 0.5
RECOVERY = 2.0
WAIT = 15.0


def test_stalled_batch_reports_what_it_wrote_and_keeps_the_futures(proxy: TcpProxy) -> None:
    names = Names()
    sender = rmq.RmqThreadCommunicator.connect(
        proxy.url, **names.options(async_task_timeout=CALL_TIMEOUT, recovery_timeout=RECOVERY)
    )
    worker = rmq.RmqThreadCommunicator.connect(SHARED_URL, **names.options())
    try:
        worker.add_task_subscriber(lambda _c, task: task * 2)
        first = sender.task_send(0)
        assert first is not None and first.result(WAIT) == 0  # declared, lane ready
        count = 600  # three windows
        proxy.stall()  # written, but no confirm can come back
        began = time.monotonic()
        with pytest.raises(kiwipy.BatchSendError) as caught:
            sender.task_send_many(range(count))
        took = time.monotonic() - began
        # not the call timeout (0.5 s): the core's own bound, recovery_timeout
        assert RECOVERY <= took < RECOVERY + 1.0
        error = caught.value
        assert all(isinstance(e, kiwipy.TimeoutError) for e in error.errors.values())
        kept = [future for future in error.futures if future is not None]
        assert len(kept) + (count - len(error.errors)) == count  # every written one kept
        proxy.resume()  # what was written goes out now, and the replies come back
        results = [future.result(WAIT) for future in kept]
        assert sorted(results) == sorted(2 * n for n, f in enumerate(error.futures) if f)
        report(
            "stalled-batch",
            sent=count,
            reported_unconfirmed=len(error.errors),
            futures_kept=len(kept),
            answered_after_resume=len(results),
            batch_returned_after_s=round(took, 3),
        )
    finally:
        proxy.resume()
        sender.close()
        worker.close()
