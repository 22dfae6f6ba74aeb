"""The pure part of leases: the decision table, headers, settings, slots and queue arguments."""

from __future__ import annotations

import datetime
from typing import Any, Optional

import pytest
from pamqp import commands as spec

from kiwipy.cli._dead_headers import dead_reason, dead_since, requeued_headers
from kiwipy.rmq._options import resolve_options
from kiwipy.rmq.leases import _leases as leases
from kiwipy.rmq.receive._topology import (
    dead_queue_arguments,
    lease_queue_arguments,
    task_queue_arguments,
)

# The decision table of docs/long-tasks.md, row by row: (answer, strikes) -> verdict.
JUDGE_CASES = [
    (leases.RUNNING, 0, leases.Verdict(leases.RENEW, 0)),
    (leases.RUNNING, 1, leases.Verdict(leases.RENEW, 0)),  # an answer clears the strikes
    (leases.FINISHED, 0, leases.Verdict(leases.DROP)),
    (leases.UNKNOWN, 1, leases.Verdict(leases.DROP)),
    (leases.RELEASED, 0, leases.Verdict(leases.TAKE_OVER)),
    (None, 0, leases.Verdict(leases.RENEW, 1)),  # first failed check: a strike
    (None, 1, leases.Verdict(leases.TAKE_OVER)),  # second: take over (lease_strikes=2)
    (None, 5, leases.Verdict(leases.TAKE_OVER)),
]


@pytest.mark.parametrize(("answer", "strikes", "verdict"), JUDGE_CASES)
def test_judge(answer: Optional[str], strikes: int, verdict: leases.Verdict) -> None:
    assert leases.judge(answer, strikes, max_strikes=2) == verdict


def test_one_strike_is_enough_when_configured() -> None:
    assert leases.judge(None, 0, max_strikes=1).action == leases.TAKE_OVER


def test_lease_headers_round_trip() -> None:
    lease = leases.Lease("owner", "lease-1", 1, 2)
    headers = leases.with_lease({"app": "x", leases.LEASE_HEADER: "old"}, lease)
    assert headers["app"] == "x"
    assert leases.read_lease(headers) == lease
    assert leases.read_lease(leases.without_lease(headers)) is None
    assert leases.without_lease(headers)[leases.TAKEOVERS_HEADER] == 2  # the history stays


def test_read_lease_of_ordinary_and_odd_messages() -> None:
    assert leases.read_lease(None) is None
    assert leases.read_lease({"x-death": []}) is None
    odd = {leases.OWNER_HEADER: b"o", leases.LEASE_HEADER: b"l", leases.STRIKES_HEADER: "bad"}
    assert leases.read_lease(odd) == leases.Lease("o", "l", 0, 0)


def test_copy_properties_keeps_what_routes_the_reply() -> None:
    props = spec.Basic.Properties(
        correlation_id="c",
        reply_to="r",
        message_id="m",
        content_type="application/json",
        user_id="guest",
        expiration="1000",
        delivery_mode=1,
    )
    copy = leases.copy_properties(props, {"h": 1})
    assert (copy.correlation_id, copy.reply_to, copy.message_id) == ("c", "r", "m")
    assert copy.content_type == "application/json"
    assert copy.headers == {"h": 1}
    assert copy.delivery_mode == 2
    assert copy.user_id is None and copy.expiration is None


def test_delivery_timeout_text() -> None:
    text = (
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout "
        "value used: 3000 ms. This timeout value can be configured, see consumers doc guide"
    )
    assert leases.delivery_timeout_ms(text) == 3000
    assert leases.delivery_timeout_ms("delivery acknowledgement on channel 1 timed out") == -1
    assert leases.delivery_timeout_ms("NOT_FOUND - no queue 'x'") is None


def test_settings() -> None:
    options = resolve_options({"task_lease_after": 0})
    assert not leases.LeaseSettings.from_options(options).enabled
    settings = leases.LeaseSettings.from_options(
        resolve_options({"task_lease_after": 1, "lease_interval": 2, "lease_check_timeout": 1})
    )
    assert settings.enabled and settings.interval_ms == 2000
    assert settings.takeover_bound == 2 * (2 + 1)
    assert leases.LeaseSettings.from_options(resolve_options({})).after == 600.0


@pytest.mark.parametrize(
    "options",
    [
        {"task_queue_type": "stream"},
        {"lease_interval": 0},
        {"lease_strikes": 0},
        {"task_lease_after": -1},
        {"task_queue_compat": True, "task_queue_type": "quorum"},
    ],
)
def test_bad_options_fail_early(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        resolve_options(options)


def test_names() -> None:
    assert leases.lease_queue("q") == "q.leases"
    assert leases.dead_queue("q") == "q.dead"
    assert leases.claim_queue("q", "l") == "q.claim.l"
    assert leases.worker_queue("o") == "kiwipy.worker.o"


class TestSlots:
    """prefetch_count stays a bound on the tasks in hand, held or leased."""

    def test_unlimited_is_inactive(self) -> None:
        assert not leases.Slots(0).active

    def test_a_lease_takes_a_slot_from_the_consumer_at_once(self) -> None:
        slots = leases.Slots(2)
        assert slots.restarted() == 2
        first = slots.received()
        slots.received()
        assert slots.wanted() is None  # two deliveries held: the broker sends no third
        slots.leased(first)
        assert slots.wanted() == "now"  # else the broker would send a third task
        assert slots.restarted() == 0  # both slots taken: do not consume
        slots.done(-1, leased=False)  # the held one ends (it belongs to the old consumer)
        assert slots.wanted() == "later"
        assert slots.restarted() == 1
        slots.done(-1, leased=True)  # the leased one ends
        assert slots.wanted() == "later"
        assert slots.restarted() == 2

    def test_ordinary_tasks_never_restart_the_consumer(self) -> None:
        slots = leases.Slots(3)
        slots.restarted()
        for _ in range(10):
            generation = slots.received()
            slots.done(generation, leased=False)
            assert slots.wanted() is None
        assert slots.in_hand == 0


class TestQueueArguments:
    def options(self, **extra: Any) -> dict[str, Any]:
        return dict(resolve_options(extra))

    def test_new_classic_queue_has_no_ttl_and_dead_letters(self) -> None:
        arguments = task_queue_arguments("q", self.options())
        assert arguments == {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q.dead"}

    def test_ttl_on_purpose(self) -> None:
        arguments = task_queue_arguments("q", self.options(task_message_ttl=5000))
        assert arguments["x-message-ttl"] == 5000
        assert arguments["x-dead-letter-routing-key"] == "q.dead"

    def test_quorum(self) -> None:
        options = self.options(task_queue_type="quorum", task_delivery_limit=3)
        arguments = task_queue_arguments("q", options)
        assert arguments["x-queue-type"] == "quorum"
        assert arguments["x-delivery-limit"] == 3
        assert dead_queue_arguments(options) == {"x-queue-type": "quorum"}
        lease = lease_queue_arguments("q", options)
        assert lease["x-dead-letter-strategy"] == "at-least-once"
        assert lease["x-overflow"] == "reject-publish"

    @pytest.mark.parametrize(
        ("limit", "version", "expected"),
        [
            (None, "3.10.8", None),  # 3.x: no default limit, and -1 is refused
            (None, "4.0.5", -1),  # 4.x: its default of 20 turned off
            (None, "", None),
            (3, "3.10.8", 3),
            (3, "4.1.0", 3),
            (0, "4.1.0", 0),
        ],
    )
    def test_delivery_limit_is_what_was_configured(
        self, limit: Optional[int], version: str, expected: Optional[int]
    ) -> None:
        options = self.options(task_queue_type="quorum", task_delivery_limit=limit)
        arguments = task_queue_arguments("q", options, version)
        assert arguments.get("x-delivery-limit") == expected
        assert arguments["x-dead-letter-strategy"] == "at-least-once"
        assert arguments["x-overflow"] == "reject-publish"

    @pytest.mark.parametrize("limit", [-1, 2.5, True, "3"])
    def test_bad_delivery_limit(self, limit: Any) -> None:
        with pytest.raises(ValueError, match="task_delivery_limit"):
            self.options(task_queue_type="quorum", task_delivery_limit=limit)

    def test_compat_is_kiwipy09(self) -> None:
        arguments = task_queue_arguments("q", self.options(task_queue_compat=True))
        assert arguments == {"x-message-ttl": 604800000}

    def test_lease_queue_sends_copies_back_after_one_interval(self) -> None:
        arguments = lease_queue_arguments("q", self.options(lease_interval=2.5))
        assert arguments == {
            "x-message-ttl": 2500,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "q",
        }

    def test_testing_mode_expires_everything(self) -> None:
        options = self.options(testing_mode=True, lease_interval=60)
        assert task_queue_arguments("q", options)["x-expires"] == 10000
        assert dead_queue_arguments(options)["x-expires"] == 10000
        assert lease_queue_arguments("q", options)["x-expires"] == 240000


class TestDeadLetterHelpers:
    def test_parked_reason(self) -> None:
        headers = {
            "x-kiwipy-reason": "undecodable",
            "x-kiwipy-error": "bad",
            "x-kiwipy-parked-at": 10,
        }
        assert dead_reason(headers) == ("undecodable", "bad")
        assert dead_since(headers) == 10.0

    def test_broker_reason(self) -> None:
        when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        death = {"reason": "delivery_limit", "queue": "q", "count": 1, "time": when}
        headers = {"x-death": [death]}
        assert dead_reason(headers) == ("delivery_limit", "from q")
        assert dead_since(headers) == when.timestamp()
        assert dead_reason(None) == ("unknown", "")

    def test_requeued_headers_drop_the_dead_and_lease_headers(self) -> None:
        headers = {
            "app": 1,
            "x-death": [],
            "x-first-death-reason": "expired",
            "x-kiwipy-reason": "malformed",
            leases.LEASE_HEADER: "l",
            "x-delivery-count": 3,
        }
        assert requeued_headers(headers) == {"app": 1, "x-kiwipy-requeued": 1}
        assert requeued_headers({"x-kiwipy-requeued": 1})["x-kiwipy-requeued"] == 2
