"""The contract suite shows a test a transport lacks a capability for as a skip with its
reason, instead of dropping it silently (issue 11 item 8)."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contract import ALL, QUEUES, CommunicatorContract
from tests.unit import test_contract_memory as memory_contract  # not its classes: no re-collection


def _contract_tests(cls: type) -> dict[str, object]:
    return {name: getattr(cls, name) for name in dir(cls) if name.startswith("test_")}


def _skip_reason(test: object) -> str | None:
    for mark in getattr(test, "pytestmark", ()):
        if mark.name == "skip":
            return str(mark.kwargs["reason"])
    return None


def test_every_contract_test_is_collected_for_a_transport_without_capabilities() -> None:
    full = _contract_tests(CommunicatorContract)
    local = _contract_tests(memory_contract.TestLocalCommunicator)
    assert set(local) == set(full)
    assert all(callable(test) for test in local.values())


def test_a_test_needing_a_missing_capability_is_skipped_naming_it() -> None:
    needing = {
        name: test.contract_needs
        for name, test in _contract_tests(CommunicatorContract).items()
        if getattr(test, "contract_needs", frozenset())
    }
    assert any(QUEUES in needed for needed in needing.values())
    for name, needed in needing.items():
        reason = _skip_reason(getattr(memory_contract.TestLocalCommunicator, name))
        assert reason is not None, name
        for capability in needed:
            assert capability in reason, (name, reason)


def test_a_skip_stand_in_requests_no_fixture() -> None:
    """A skipped stand-in must not set up the transport (no broker, no communicator)."""
    name = next(
        n
        for n, t in _contract_tests(CommunicatorContract).items()
        if QUEUES in getattr(t, "contract_needs", ())
    )
    assert list(
        inspect.signature(getattr(memory_contract.TestLocalCommunicator, name)).parameters
    ) == ["self"]


@pytest.mark.parametrize("cls", [CommunicatorContract, memory_contract.TestThreadMemoryJson])
def test_transports_with_every_capability_run_every_test_unmarked(
    cls: type[CommunicatorContract],
) -> None:
    assert cls.capabilities == ALL
    assert all(_skip_reason(test) is None for test in _contract_tests(cls).values())


def test_capability_skips_stay_skips_under_ci() -> None:
    """Under ``CI=true`` a missing prerequisite fails (``tests._ci.require``), but a test a
    transport has no capability for is still a skip: the two rules do not mix."""
    local = "tests/unit/test_contract_memory.py::TestLocalCommunicator"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", local, "-q", "-p", "no:cacheprovider", "-rs"],
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "true"},
        cwd=Path(__file__).parents[2],
        timeout=60,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    skipped = sum(
        1
        for test in _contract_tests(CommunicatorContract).values()
        if getattr(test, "contract_needs", frozenset())
    )
    counts = re.findall(r"^SKIPPED \[(\d+)\] [^:]+:\d+: (.*)$", run.stdout, re.MULTILINE)
    contract = sum(int(n) for n, reason in counts if "transport lacks capability" in reason)
    assert contract == skipped, run.stdout[-2000:]
    assert "transport lacks capability: queues" in run.stdout
    # the battery's own skips are the same kind: what the transport has or promises
    battery = ("the transport lacks the", "does not promise anything", "no message size limit")
    others = [r for _, r in counts if "transport lacks capability" not in r]
    assert all(any(word in r for word in battery) for r in others), others
