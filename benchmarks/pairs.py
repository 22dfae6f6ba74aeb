"""Compare settings measured in alternation: one ``--repeat 1`` run per setting, taking
turns (A, B, A, B, ...), each run's JSON named ``<setting>-<n>.json`` in one folder.

    python -m benchmarks.pairs benchmarks/results/2026-12-05-layout before-21ba511 after-0bc3d3b

prints, per metric and implementation, each setting's median over its runs and the median of
its ratio to kiwipy 0.9 (``kiwipy09-thread``) measured in the same run, which cancels much of
the machine's drift between runs.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
from pathlib import Path
from typing import Optional

REFERENCE = "kiwipy09-thread"

Key = tuple[str, str]  # (metric, implementation)


def _read(folder: Path, setting: str) -> tuple[dict[Key, list[float]], dict[Key, list[float]]]:
    values: dict[Key, list[float]] = collections.defaultdict(list)
    ratios: dict[Key, list[float]] = collections.defaultdict(list)
    for path in sorted(folder.glob(f"{setting}-*.json")):
        per_metric: dict[str, dict[str, float]] = collections.defaultdict(dict)
        for run in json.loads(path.read_text())["runs"]:
            if run.get("status") == "ok":
                for metric, value in run["metrics"].items():
                    per_metric[metric][run["impl"]] = value
        for metric, impls in per_metric.items():
            reference = impls.get(REFERENCE)
            for impl, value in impls.items():
                values[(metric, impl)].append(value)
                if reference:
                    ratios[(metric, impl)].append(value / reference)
    return values, ratios


def _median(values: list[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("settings", nargs="+")
    args = parser.parse_args(argv)
    read = {setting: _read(args.folder, setting) for setting in args.settings}
    keys = sorted({key for values, _ in read.values() for key in values})
    head = "".join(f" {s[:14] + ' median':>22} {'/ 0.9':>7}" for s in args.settings)
    print(f"{'metric':22} {'implementation':22}{head}  runs")
    for key in keys:
        row = f"{key[0]:22} {key[1]:22}"
        for values, ratios in read.values():
            value, ratio = _median(values.get(key, [])), _median(ratios.get(key, []))
            row += f" {value:22.2f}" if value is not None else f" {'-':>22}"
            row += f" {ratio:7.3f}" if ratio is not None else f" {'-':>7}"
        runs = ",".join(str(len(values.get(key, []))) for values, _ in read.values())
        print(f"{row}  {runs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
