"""The guides' examples run as written (issue 19, items 2 and 3).

Every ```` ```python ```` block of the pages below is a complete script on the in-process
transport: it runs in a subprocess of its own and must succeed, and when a ```` ```text ````
block follows it directly, that is what it prints. Blocks that need a broker or are fragments
are written as ```` ```{code-block} python ```` and are not run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["asyncio.md", "migration.md"]

_BLOCK = re.compile(r"```python\n(?P<code>.*?)```\n(?:\n```text\n(?P<output>.*?)```)?", re.S)


def examples() -> list[tuple[str, str, str | None]]:
    found = []
    for page in PAGES:
        text = (DOCS / page).read_text(encoding="utf-8")
        for number, match in enumerate(_BLOCK.finditer(text), 1):
            found.append((f"{page}#{number}", match["code"], match["output"]))
    return found


EXAMPLES = examples()


def test_every_page_has_examples() -> None:
    for page in PAGES:
        assert any(name.startswith(page) for name, _, _ in EXAMPLES), page


@pytest.mark.parametrize(("name", "code", "output"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_runs_as_written(name: str, code: str, output: str | None, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, f"{name}:\n{run.stderr[-2000:]}"
    assert "Task was destroyed" not in run.stderr, run.stderr
    if output is not None:
        assert run.stdout == output, name
