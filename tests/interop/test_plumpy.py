"""plumpy 0.26 (kiwipy 0.9's main client) runs unchanged on this library over RabbitMQ.

plumpy is installed without dependencies in its own virtual environment on top of this
kiwipy (``scripts/plumpy-venv``), and its own client code is driven by
``tests/interop/plumpy_check.py`` in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.interop, pytest.mark.integration]


def plumpy_python() -> str:
    out = subprocess.run(
        [str(ROOT / "scripts" / "plumpy-venv")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def test_plumpy_launches_controls_and_listens(rmq_uri: str) -> None:
    prefix = f"kiwipy-test-plumpy-{uuid.uuid4().hex[:8]}"
    script = Path(__file__).with_name("plumpy_check.py")
    run = subprocess.run(
        [plumpy_python(), "-W", "ignore", str(script), rmq_uri, prefix],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    steps = {}
    for line in run.stdout.splitlines():
        step = json.loads(line)
        steps[step.pop("step")] = step
    assert steps["launch"] == {"result": {}}
    assert steps["launch_nowait"] == {"pids": 10}
    assert steps["execute"] == {"result": {}}
    assert steps["pause"] == {"paused": True}
    assert steps["play"] == {"paused": False}
    assert steps["kill"] == {"state": "ProcessState.KILLED"}
    assert steps["broadcast"] == {"received": [{"x": 2}, "test.hello"]}
    assert steps["closed"] == {"is_closed": True}
    _ = sys  # the subprocess uses its own interpreter on purpose
