"""Fixtures shared by every test directory. Keep it minimal: transport-specific fixtures
belong in the directory that needs them."""

from __future__ import annotations

import re
import uuid

import pytest


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses, for per-test isolation: a ``memory://`` broker name, or
    RabbitMQ exchange and queue names. It names the test, to help debugging."""
    test = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40]
    return f"kiwipy-test-{test}-{uuid.uuid4().hex[:8]}"
