"""``BroadcastFilter``: kiwipy 0.9's matching rules, as documented in ``kiwipy.filters``."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kiwipy import BroadcastFilter

# (filter value, candidate, matches): one table for subjects and senders alike.
MATCHING = [
    ("purchase", "purchase.car", True),  # anchored at the start only
    ("purchase", "a.purchase", False),
    ("alice.jones", "alice.jonesX", True),
    ("a.b", "a.b", True),
    ("a.b", "aXb", False),  # '.' is a literal dot
    ("purchase.*", "purchase.car.red", True),  # '*' spans dots too
    ("purchase.*", "purchase.", True),
    ("purchase.*", "purchasecar", False),
    ("*.car", "purchase.car", True),
    ("*", "", True),
    ("a*c", "abbbc", True),
    ("a*c", "ab", False),
    ("car$", "car", True),  # other regex syntax keeps its meaning
    ("car$", "carpet", False),
    ("[ab]x", "bx", True),
    (re.compile(r"^(?!state_changed).*"), "pause", True),  # plumpy's filter
    (re.compile(r"^(?!state_changed).*"), "state_changed.a.b", False),
    (re.compile("car"), "a car", False),  # patterns use match(), not search()
    (5, 5, True),  # anything else compares by equality
    (5, "5", False),
    ("5", 5, False),  # a wildcard never matches a non-string
]


def subjects(filter_: BroadcastFilter, messages: list[tuple[Any, Any]]) -> list[Any]:
    delivered: list[Any] = []
    filter_._subscriber = lambda _c, body, *rest: delivered.append(body)
    for sender, subject in messages:
        filter_(None, (sender, subject), sender, subject, None)
    return delivered


@pytest.mark.parametrize(("value", "candidate", "matches"), MATCHING)
def test_subject_filter(value: Any, candidate: Any, matches: bool) -> None:
    assert BroadcastFilter(print, subject=value).is_filtered(None, candidate) is not matches


@pytest.mark.parametrize(("value", "candidate", "matches"), MATCHING)
def test_sender_filter(value: Any, candidate: Any, matches: bool) -> None:
    assert BroadcastFilter(print, sender=value).is_filtered(candidate, None) is not matches


def test_none_is_never_filtered_out() -> None:
    filter_ = BroadcastFilter(print, subject="x", sender="y")
    assert not filter_.is_filtered(None, None)
    assert not filter_.is_filtered("y", None)
    assert filter_.is_filtered("z", None)


def test_filters_of_one_kind_or_and_kinds_and() -> None:
    filter_ = BroadcastFilter(print, subject="buy.*", sender="alice")
    filter_.add_subject_filter("sell.*")
    filter_.add_sender_filter(re.compile("bob$"))
    messages = [
        ("alice", "buy.car"),
        ("bob", "sell.car"),
        ("alice", "rent.car"),
        ("carol", "buy.car"),
        ("bobby", "buy.car"),
    ]
    assert subjects(filter_, messages) == [("alice", "buy.car"), ("bob", "sell.car")]


def test_no_filter_lets_everything_through() -> None:
    assert subjects(BroadcastFilter(print), [("a", "b"), (None, None)]) == [
        ("a", "b"),
        (None, None),
    ]


def test_call_is_positional_and_returns_the_result() -> None:
    calls: list[tuple[Any, ...]] = []

    def subscriber(*args: Any) -> str:
        calls.append(args)
        return "result"

    filter_ = BroadcastFilter(subscriber, subject="s")
    assert filter_("comm", "body", sender="me", subject="s", correlation_id=7) == "result"
    assert filter_("comm", "body", "me", "other", 8) is None
    assert calls == [("comm", "body", "me", "s", 7)]
    assert filter_.__name__ == "BroadcastFilter"
