"""Add the cases of a later, partial run to a full run's JSON, for one table and chart.

    python -m benchmarks.merge benchmarks/results/latest.json later.json --out merged.json

The runs of every case measured in *later* replace that case's runs in *base* (or are
added); summary and targets are computed again from the runs. The merged document keeps
*base*'s machine and interpreter records, and lists both runs under ``merged_from`` (with
their start and end times and commands), so the docs can say which numbers came from where.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from .__main__ import write_json
from .report import console_table, evaluate_targets, summarize


def merge(base: Dict[str, Any], later: Dict[str, Any]) -> Dict[str, Any]:
    """:returns: *base* with the cases of *later* (module doc)."""
    replaced = {case["name"] for case in later["cases"]}
    runs = [run for run in base["runs"] if run["case"] not in replaced] + later["runs"]
    cases = [case for case in base["cases"] if case["name"] not in replaced] + later["cases"]
    rows = summarize(runs)
    doc = dict(base)
    doc.update(
        cases=cases,
        runs=runs,
        summary=rows,
        targets=evaluate_targets(rows),
        merged_from=[_origin(base, None), _origin(later, sorted(replaced))],
    )
    return doc


def _origin(doc: Dict[str, Any], cases: Optional[List[str]]) -> Dict[str, Any]:
    return {
        "command": doc.get("command"),
        "started": doc.get("started"),
        "finished": doc.get("finished"),
        "source": doc.get("source"),
        "cases": cases if cases is not None else "all others",
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.merge", description=__doc__)
    parser.add_argument("base", type=Path)
    parser.add_argument("later", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    doc = merge(json.loads(args.base.read_text()), json.loads(args.later.read_text()))
    print(console_table(doc["summary"], doc["targets"]))
    write_json(args.out, doc)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
