"""The examples that need no broker: ``examples/quickstart.py`` and the README's thirty-second
example, both on the in-process transport, as a new user runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(argv: list[str]) -> list[str]:
    env = {key: value for key, value in os.environ.items() if key != "KIWIPY_URL"}
    env["PYTHONPATH"] = str(ROOT / "src")
    result = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def test_quickstart() -> None:
    assert run_python([str(ROOT / "examples" / "quickstart.py")]) == [
        "42",
        "Hello, Ada!",
        "job.7.finished from client: done",
    ]


def test_readme_thirty_second_example() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Thirty seconds", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    assert run_python(["-c", code.group(1)]) == ["42", "Hello, Ada!"]


TRACE_TREE = [
    "trace:",
    "  notebook cell [-]",
    "    send trace-example.tasks [PRODUCER]",
    "      process trace-example.tasks [CONSUMER]",
    "        simulate [-]",
]


def test_trace_task_example() -> None:
    """docs/observability.md's example: one trace from the script's span to the worker's."""
    lines = run_python([str(ROOT / "examples" / "trace_task.py")])
    assert "result: 45" in lines
    assert lines[-5:] == TRACE_TREE
    assert '        "messaging.system": "kiwipy.memory",' in lines  # the console exporter's
