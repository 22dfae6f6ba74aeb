"""Task queue declarations a kiwipy 0.9 peer can share (issue 11, item 10): in testing mode
a new task queue is declared exactly as kiwipy 0.9 declares it, unless asked otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from kiwipy.rmq import defaults
from kiwipy.rmq._options import resolve_options
from kiwipy.rmq.receive._topology import task_queue_arguments, task_queue_durable

#: kiwipy 0.9 in testing mode: ``durable=False`` with these arguments.
KIWIPY09_TESTING = {"x-message-ttl": defaults.TASK_MESSAGE_TTL, "x-expires": 10000}


def declaration(**options: Any) -> tuple[bool, dict[str, Any]]:
    resolved = resolve_options(options)
    return task_queue_durable(resolved), task_queue_arguments("q", resolved)


def test_testing_mode_declares_kiwipy09_task_queue() -> None:
    assert declaration(testing_mode=True) == (False, KIWIPY09_TESTING)


def test_compat_in_testing_mode_declares_kiwipy09_task_queue() -> None:
    assert declaration(testing_mode=True, task_queue_compat=True) == (False, KIWIPY09_TESTING)


def test_compat_outside_testing_mode_is_kiwipy09_durable_queue() -> None:
    expected = {"x-message-ttl": defaults.TASK_MESSAGE_TTL}
    assert declaration(task_queue_compat=True) == (True, expected)


@pytest.mark.parametrize(
    "options",
    [
        {"testing_mode": True, "task_queue_compat": False},
        {"testing_mode": True, "task_queue_type": "quorum"},
        {"testing_mode": True, "task_message_ttl": 5000},
        {},
    ],
    ids=["compat-off", "quorum", "own-ttl", "production"],
)
def test_this_librarys_arguments_when_asked_or_outside_testing_mode(
    options: dict[str, Any],
) -> None:
    durable, arguments = declaration(**options)
    assert durable
    assert arguments["x-dead-letter-routing-key"] == "q.dead"


def test_compat_with_quorum_is_refused() -> None:
    with pytest.raises(ValueError, match="classic"):
        resolve_options({"task_queue_compat": True, "task_queue_type": "quorum"})
