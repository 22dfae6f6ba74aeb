"""The contract suite shows a test a transport lacks a capability for as a skip with its
reason, instead of dropping it silently (issue 11 item 8)."""

from __future__ import annotations

import inspect

import pytest

from tests.contract import ALL, QUEUES, CommunicatorContract
from tests.unit.test_contract_memory import TestAsyncMemoryYaml, TestLocalCommunicator


def _contract_tests(cls: type) -> dict[str, object]:
    return {name: getattr(cls, name) for name in dir(cls) if name.startswith("test_")}


def _skip_reason(test: object) -> str | None:
    for mark in getattr(test, "pytestmark", ()):
        if mark.name == "skip":
            return str(mark.kwargs["reason"])
    return None


def test_every_contract_test_is_collected_for_a_transport_without_capabilities() -> None:
    full = _contract_tests(CommunicatorContract)
    local = _contract_tests(TestLocalCommunicator)
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
        reason = _skip_reason(getattr(TestLocalCommunicator, name))
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
    assert list(inspect.signature(getattr(TestLocalCommunicator, name)).parameters) == ["self"]


@pytest.mark.parametrize("cls", [CommunicatorContract, TestAsyncMemoryYaml])
def test_transports_with_every_capability_run_every_test_unmarked(
    cls: type[CommunicatorContract],
) -> None:
    assert cls.capabilities == ALL
    assert all(_skip_reason(test) is None for test in _contract_tests(cls).values())
