"""One rule for prerequisites a test cannot create itself (the broker, a kiwipy 0.9 venv,
libyaml): without them a test skips on a developer's machine, but fails under ``CI=true``,
where a missing prerequisite is a broken set-up, never a reason to pass quietly."""

from __future__ import annotations

import os

import pytest

__all__ = ("require",)


def require(condition: bool, reason: str) -> None:
    """Skip when *condition* is false, or fail under ``CI=true``."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: not skipping)")
    pytest.skip(reason)
