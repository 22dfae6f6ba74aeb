"""plumpy 0.26 (kiwipy 0.9's main client) runs unchanged on this library over RabbitMQ and
over a SQLite file (``sqlite://``), in one process and across two.

plumpy and this kiwipy are installed in their own virtual environment by the recipe of
docs/installation.md, run as written (``scripts/plumpy-venv`` reads it from the page), and
plumpy's own client code is driven by ``tests/interop/plumpy_check.py`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import kiwipy

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.interop]


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


#: The transports the plumpy scenarios run on (``rmq`` needs the broker).
TRANSPORTS = [pytest.param("rmq", marks=pytest.mark.integration), "sqlite"]
SCRIPT = Path(__file__).with_name("plumpy_check.py")


@pytest.fixture(params=TRANSPORTS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A RabbitMQ URL, or a ``sqlite://`` URL of a file in the test's directory."""
    if request.param == "rmq":
        return str(request.getfixturevalue("rmq_uri"))
    return f"sqlite:///{tmp_path / 'plumpy.db'}"


def own_environment() -> dict[str, str]:
    """This environment without ``PYTHONPATH``: the plumpy venv uses the kiwipy installed in it."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def steps_of(stdout: str) -> dict[str, dict[str, object]]:
    """:returns: the JSON lines of plumpy_check.py by step, without their timings (printed)."""
    steps = {}
    for line in stdout.splitlines():
        step = json.loads(line)
        print(f"{step['step']}: {step.pop('seconds')} s")
        steps[step.pop("step")] = step
    return steps


def plumpy_python() -> str:
    out = subprocess.run(
        [str(ROOT / "scripts" / "plumpy-venv")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.integration
def test_installation_recipe_as_written() -> None:
    """The page's recipe gives an environment where plumpy imports this kiwipy and runs a
    process, and pip said what the page says it says."""
    python = plumpy_python()
    run = subprocess.run(
        [python, "-W", "ignore", "-c", TINY_CHECK],
        capture_output=True,
        text=True,
        timeout=60,
        env=own_environment(),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    version, path, outputs = run.stdout.split(maxsplit=2)
    assert version == kiwipy.__version__ and not version.startswith("0.")
    assert "plumpy-recipe" in path  # installed by the recipe, not found on a path of ours
    assert outputs.strip() == "{'x': 42}"
    shown = [line for line in PAGE.read_text().splitlines() if line.startswith("plumpy 0.26.0 ")]
    assert shown and shown[0] in LOG.read_text()  # the conflict message, word for word


def test_plumpy_launches_controls_and_listens(url: str) -> None:
    prefix = f"kiwipy-test-plumpy-{uuid.uuid4().hex[:8]}"
    run = subprocess.run(
        [plumpy_python(), "-W", "ignore", str(SCRIPT), url, prefix],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=own_environment(),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    steps = steps_of(run.stdout)
    assert steps["launch"] == {"result": {}}
    assert steps["launch_nowait"] == {"pids": 10}
    assert steps["execute"] == {"result": {}}
    assert steps["pause"] == {"paused": True}
    assert steps["play"] == {"paused": False}
    assert steps["kill"] == {"state": "ProcessState.KILLED"}
    assert steps["broadcast"] == {"received": [{"x": 2}, "test.hello"]}
    assert steps["closed"] == {"is_closed": True}
    _ = sys  # the subprocess uses its own interpreter on purpose


def test_plumpy_across_two_processes(url: str) -> None:
    """A worker process runs plumpy's ProcessLauncher; another launches processes there over
    tasks and pauses, plays and kills one with RemoteProcessThreadController (over RPC and
    by broadcast), hears its state-change broadcast, and exchanges broadcasts with the
    worker."""
    prefix = f"kiwipy-test-plumpy-{uuid.uuid4().hex[:8]}"
    python = plumpy_python()

    def start(role: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [python, "-W", "ignore", str(SCRIPT), url, prefix, role],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=own_environment(),
        )

    with start("worker") as worker:
        try:
            with start("controller") as controller:  # waits for the worker's RPC subscriber
                try:
                    out, err = controller.communicate(timeout=60)
                finally:
                    controller.kill()
            assert controller.returncode == 0, err[-2000:]
            worker_out, worker_err = worker.communicate(timeout=20)  # it stops on test.stop
        finally:
            worker.kill()
    assert worker.returncode == 0, worker_err[-2000:]
    steps = steps_of(out)
    assert steps["launch"] == {"result": {}}
    assert steps["launch_nowait"] == {"pids": 10}
    assert steps["remote"] == {"state": "ProcessState.WAITING", "paused": False}
    assert steps["pause"] == {"result": True, "paused": True}
    assert steps["play"] == {"result": True, "paused": False}
    assert steps["pause_all"] == {"paused": True}
    assert steps["play_all"] == {"paused": False}
    assert steps["kill"] == {
        "result": True,
        "broadcast": "state_changed.waiting.killed",
        "from_process": True,
    }
    assert steps["kill_unsubscribed"] == {"unroutable": True}
    assert steps["broadcast"] == {
        "received": [{"echo": {"x": 2}}, "echo.hello", f"{prefix}.worker"]
    }
    assert steps["closed"] == {"is_closed": True}
    heard = steps_of(worker_out)
    assert heard["heard"] == {"received": [{"x": 2}, "test.hello", f"{prefix}.controller"]}
    assert heard["stopped"] == {"by": f"{prefix}.controller"}
    assert heard["closed"] == {"is_closed": True}
