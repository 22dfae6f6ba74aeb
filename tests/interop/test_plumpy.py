"""plumpy 0.26 (kiwipy 0.9's main client) runs unchanged on this library over RabbitMQ.

plumpy and this kiwipy are installed in their own virtual environment by the recipe of
docs/installation.md, run as written (``scripts/plumpy-venv`` reads it from the page), and
plumpy's own client code is driven by ``tests/interop/plumpy_check.py`` in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import kiwipy

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.interop, pytest.mark.integration]


PAGE = ROOT / "docs" / "installation.md"
LOG = ROOT / ".cache" / "plumpy-recipe" / "install.log"

TINY_CHECK = """
import plumpy, kiwipy

class Answer(plumpy.Process):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.output("x")

    def run(self):
        self.out("x", 42)

print(kiwipy.__version__, kiwipy.__file__, Answer(communicator=kiwipy.LocalCommunicator()).execute())
"""


def plumpy_python() -> str:
    out = subprocess.run(
        [str(ROOT / "scripts" / "plumpy-venv")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def test_installation_recipe_as_written() -> None:
    """The page's recipe gives an environment where plumpy imports this kiwipy and runs a
    process, and pip said what the page says it says."""
    python = plumpy_python()
    run = subprocess.run(
        [python, "-W", "ignore", "-c", TINY_CHECK], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-2000:]
    version, path, outputs = run.stdout.split(maxsplit=2)
    assert version == kiwipy.__version__ and not version.startswith("0.")
    assert "plumpy-recipe" in path  # installed by the recipe, not found on a path of ours
    assert outputs.strip() == "{'x': 42}"
    shown = [line for line in PAGE.read_text().splitlines() if line.startswith("plumpy 0.26.0 ")]
    assert shown and shown[0] in LOG.read_text()  # the conflict message, word for word


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
