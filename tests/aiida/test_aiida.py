"""AiiDA itself runs unchanged on this library: its daemon, submit, pause/play/kill, restarts.

aiida-core 2.9.4 from the package index, with this kiwipy installed over kiwipy 0.9 exactly as
``docs/aiida.md`` tells users (``scripts/aiida-venv``), drives a throw-away profile on SQLite
storage whose broker is the local RabbitMQ, in a vhost of its own (``scenario.py`` does the
AiiDA side; this module sets up and checks). The installation starts on kiwipy 0.9 (a second
venv, ``scripts/aiida-venv kiwipy09``), whose daemon declares the queues, pauses a process and
leaves tasks queued; then it switches to this library.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from .._ci import require

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("scenario.py")

pytestmark = [pytest.mark.interop, pytest.mark.integration, pytest.mark.slow]


def _venv_python(*flavour: str) -> str:
    out = subprocess.run(
        [str(ROOT / "scripts" / "aiida-venv"), *flavour],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return out.stdout.strip().splitlines()[-1]


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def vhost(rmq_uri: str):
    require(shutil.which("rabbitmqctl") is not None, "rabbitmqctl is needed to make a vhost")
    name = f"kiwipy-test-aiida-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    _rabbitmqctl("delete_vhost", name)


def _phase(python: str, phase: str, state_file: Path, timeout: float) -> None:
    run = subprocess.run(
        [python, "-W", "ignore", str(SCENARIO), phase, str(state_file)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, f"phase {phase}:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"


@pytest.mark.timeout(900)
def test_aiida_daemon_submit_control_restart_and_switch_from_kiwipy09(
    vhost: str, tmp_path: Path
) -> None:
    ours, legacy = _venv_python(), _venv_python("kiwipy09")
    state_file = tmp_path / "state.json"
    state = {"aiida_path": str(tmp_path / "aiida"), "profile": "e2e", "vhost": vhost}
    state_file.write_text(json.dumps(state))

    _phase(ours, "setup", state_file, timeout=300)
    _phase(legacy, "legacy", state_file, timeout=300)
    _phase(ours, "main", state_file, timeout=600)

    state = json.loads(state_file.read_text())
    figures = state["main"]["figures"]
    print("AiiDA end-to-end figures (s):", json.dumps(figures))
    assert figures["unfinished_at_restart"] > 0
