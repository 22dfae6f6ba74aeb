"""From raw repetitions to medians, ratios, targets, the console table and the machine record.

A summary row is one (metric, implementation): every repetition's value, the median and the
min-max. Ratios are ``median / other median`` against each reference of the same metric and,
for our implementation, against kiwipy 0.9 in the same variant (thread or asyncio).
"""

from __future__ import annotations

import os
import platform
import statistics
from typing import Any, Dict, List, Optional, Tuple

from .catalog import CASES, IMPLS, TARGETS

Row = Dict[str, Any]


def fmt(value: Optional[float]) -> str:
    """A number with as many digits as a noisy benchmark deserves."""
    if value is None:
        return "-"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size == 0:
        return "0"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _values(runs: List[Dict[str, Any]], metric: str) -> List[float]:
    out = []
    for run in runs:
        value = run.get("metrics", {}).get(metric)
        if run.get("status") == "ok" and isinstance(value, (int, float)):
            out.append(float(value))
    return out


def _why_not(runs: List[Dict[str, Any]]) -> Tuple[str, str]:
    """The status and a one-line reason for a row without values."""
    for run in runs:
        if run.get("status") == "n/a":
            return "n/a", str(run.get("reason", ""))
    for run in runs:
        if run.get("status") == "error":
            return "error", str(run.get("error", ""))
    details = runs[0].get("details", {}) if runs else {}
    return "n/a", str(details.get("lag", "no value"))


def summarize(runs: List[Dict[str, Any]]) -> List[Row]:
    rows: List[Row] = []
    for case in CASES:
        for metric in case.metrics:
            for impl in case.impls:
                mine = [r for r in runs if r.get("case") == case.name and r.get("impl") == impl]
                if not mine:
                    continue
                row: Row = {
                    "case": case.name,
                    "metric": metric.name,
                    "title": metric.title,
                    "unit": metric.unit,
                    "higher_is_better": metric.higher_is_better,
                    "impl": impl,
                    "kind": IMPLS[impl].kind,
                    "repetitions": len(mine),
                    "values": _values(mine, metric.name),
                    "errors": sorted({str(r["error"]) for r in mine if r.get("status") == "error"}),
                }
                if row["values"]:
                    vals = row["values"]
                    row.update(status="ok", median=statistics.median(vals))
                    row.update(min=min(vals), max=max(vals))
                else:
                    row["status"], row["note"] = _why_not(mine)
                rows.append(row)
    add_ratios(rows)
    return rows


def add_ratios(rows: List[Row]) -> None:
    index = {(r["metric"], r["impl"]): r for r in rows}
    for row in rows:
        if row["kind"] == "reference" or "median" not in row:
            continue
        others = [r for r in rows if r["metric"] == row["metric"] and r["kind"] == "reference"]
        if row["kind"] == "ours":
            name = IMPLS[row["impl"]].twin or row["impl"].replace("kiwipy-", "kiwipy09-")
            twin = index.get((row["metric"], name))
            others = ([twin] if twin else []) + others
        ratios = {}
        for other in others:
            if other.get("median"):
                ratios[other["impl"]] = row["median"] / other["median"]
        row["ratios"] = ratios


def evaluate_targets(rows: List[Row]) -> List[Dict[str, Any]]:
    index = {(r["metric"], r["impl"]): r for r in rows}
    out = []
    for target in TARGETS:
        entry: Dict[str, Any] = {
            "metric": target.metric,
            "impl": target.impl,
            "op": target.op,
            "threshold": target.threshold,
            "versus": target.versus,
            "text": target.text,
            "value": None,
        }
        row = index.get((target.metric, target.impl))
        ref = index.get((target.metric, target.versus)) if target.versus else None
        if row is None or "median" not in row:
            why = row.get("note", "") if row else "not measured"
            entry.update(status="n/a", why=f"{target.impl}: {why}")
        elif target.versus and (ref is None or not ref.get("median")):
            entry.update(status="n/a", why=f"{target.versus}: not measured")
        else:
            value = row["median"] / ref["median"] if ref else row["median"]
            met = value >= target.threshold if target.op == ">=" else value <= target.threshold
            entry.update(value=value, status="met" if met else "missed")
        out.append(entry)
    return out


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _ratio_text(row: Row) -> str:
    return ", ".join(f"{fmt_ratio(v)}x {k}" for k, v in row.get("ratios", {}).items())


def console_table(rows: List[Row], targets: List[Dict[str, Any]]) -> str:
    lines = []
    metric = None
    head = f"  {'implementation':<21} {'median':>10} {'min-max':>21}  ratios (median / other's)"
    for row in rows:
        if row["metric"] != metric:
            metric = row["metric"]
            better = "higher" if row["higher_is_better"] else "lower"
            lines += ["", f"{row['title']} [{row['metric']}] ({row['unit']}, {better} is better)"]
            lines.append(head)
        if row["status"] == "ok":
            span = f"{fmt(row['min'])} - {fmt(row['max'])}"
            lines.append(
                f"  {row['impl']:<21} {fmt(row['median']):>10} {span:>21}  {_ratio_text(row)}"
            )
        else:
            lines.append(f"  {row['impl']:<21} {row['status'].upper():>10}  {row['note'][:110]}")
    lines += ["", "Targets (issue 6; sqlite://):"]
    for t in targets:
        versus = f" / {t['versus']}" if t["versus"] else ""
        value = fmt(t["value"]) if t["value"] is not None else "-"
        shown = f"{t['metric']} {t['impl']}{versus} = {value} (need {t['op']} {t['threshold']:g})"
        lines.append(f"  {t['status'].upper():<7} {t['text']:<42} {shown}")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine() -> Dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "loadavg_start": list(os.getloadavg()),
    }
