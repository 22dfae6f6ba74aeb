"""``python -m benchmarks``: run the suite, print the table, write the JSON.

See benchmarks/README.md for what is measured and how to read the output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import OTEL_ENV
from ._support import ROOT
from .catalog import CASES, CASES_BY_NAME, IMPLS, TARGETS
from .report import console_table, evaluate_targets, machine, summarize
from .runner import Plan, aiida_zmq_python, kiwipy09_python, leftovers, run_plan

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latest.json"


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--repeat", type=int, help="repetitions per case (default 5; 1 if --quick)")
    parser.add_argument("--quick", action="store_true", help="small N: a smoke test of the suite")
    parser.add_argument("--only", nargs="+", metavar="CASE", choices=sorted(CASES_BY_NAME))
    parser.add_argument("--impl", nargs="+", metavar="IMPL", choices=sorted(IMPLS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path")
    parser.add_argument("--kiwipy09-python", help="interpreter with kiwipy 0.9 installed")
    parser.add_argument(
        "--aiida-zmq-python",
        help="interpreter with aiida-core 2.9 and pyzmq (default: scripts/aiida-zmq-venv)",
    )
    parser.add_argument("--list", action="store_true", help="list cases, implementations, targets")
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="measure what OpenTelemetry tracing costs (off / API only / SDK) instead; "
        "see benchmarks/tracing.py (with --repeat and --quick)",
    )
    return parser.parse_args(argv)


def list_everything() -> None:
    for case in CASES:
        print(f"{case.name:<20} n={case.n:<6} quick n={case.quick_n:<5} {', '.join(case.impls)}")
    print()
    for impl in IMPLS.values():
        print(f"{impl.name:<19} {impl.interpreter:<9} {impl.label}")
    print()
    for t in TARGETS:
        versus = f"x {t.versus}" if t.versus else "(absolute)"
        print(f"{t.text:<45} {t.metric} {t.impl} {t.op} {t.threshold:g}{versus}")


def probe(python: Optional[str], broker: bool) -> Dict[str, Any]:
    if python is None:
        return {"error": "interpreter unavailable"}
    cmd = [python, "-m", "benchmarks._child", "--probe"] + (["--broker"] if broker else [])
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
        return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": repr(exc)}


def source_state() -> Dict[str, Any]:
    """Which code of ours was measured: the commit, and whether src/ had local changes."""

    def git(*args: str) -> Optional[str]:
        try:
            proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        except OSError:
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--", "src")
    return {"commit": git("rev-parse", "HEAD"), "src_changed": bool(status) if status else False}


def write_json(path: Path, doc: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.list:
        list_everything()
        return 0
    repeat = args.repeat or (1 if args.quick else 5)
    if args.tracing:
        from . import tracing

        quick = ["--n-memory", "500", "--n-rmq", "100"] if args.quick else []
        return tracing.main(["--repeat", str(args.repeat or 3), *quick])
    cases = [c for c in CASES if not args.only or c.name in args.only]
    plan = Plan(cases, args.impl, repeat, args.quick)
    k09, k09_error = kiwipy09_python(args.kiwipy09_python)
    pythons = {"ours": sys.executable, "kiwipy09": k09, "kiwipy09-error": k09_error}
    interpreters = {"ours": probe(sys.executable, broker=True), "kiwipy09": probe(k09, False)}
    if any(impl.interpreter == "aiida-zmq" for _case, _rep, impl in plan.steps()):
        zmq, zmq_error = aiida_zmq_python(args.aiida_zmq_python)
        pythons.update({"aiida-zmq": zmq, "aiida-zmq-error": zmq_error})
        interpreters["aiida-zmq"] = probe(zmq, False)
    started, t0, host = _now(), time.monotonic(), machine()
    print(f"{len(plan.steps())} measurements, {repeat} repetition(s)", file=sys.stderr)
    runs, interrupted = run_plan(plan, pythons)
    rows = summarize(runs)
    targets = evaluate_targets(rows)
    host["loadavg_end"] = list(os.getloadavg())
    doc = {
        "schema": 1,
        "command": ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])],
        "started": started,
        "finished": _now(),
        "duration_s": round(time.monotonic() - t0, 1),
        "interrupted": interrupted,
        "settings": {
            "repeat": repeat,
            "quick": args.quick,
            "body_bytes": 1024,
            "kiwipy_src": os.environ.get("KIWIPY_BENCH_SRC"),  # a frozen copy, if one was used
            "opentelemetry": os.environ.get(OTEL_ENV) == "1",  # importable in the measurements
        },
        "source": source_state(),
        "machine": host,
        "broker": interpreters["ours"].pop("broker", {}),
        "interpreters": interpreters,
        "cases": [
            {"name": c.name, "n": c.quick_n if args.quick else c.n, "impls": list(c.impls)}
            | {"params": c.params, "metrics": [m.name for m in c.metrics]}
            for c in cases
        ],
        "summary": rows,
        "targets": targets,
        "runs": runs,
        "leftovers": leftovers(),
    }
    print(console_table(rows, targets))
    write_json(args.out, doc)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
