"""Runs the plan: one child process per measurement, implementations interleaved.

For each case, repetition r runs every implementation once (A, B, C, A, B, C, ...), so slow
drifts in the machine's load spread over all of them. Each child gets a unique name prefix
``bench-<runner pid>-<case>-<seq>``; whatever it declared under that prefix is deleted after
it exits, even when it crashed or was killed for running too long.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ._sqlite import VARIANTS as SQLITE_VARIANTS
from ._sqlite import leftover_dirs
from ._support import ROOT, URL, Names
from .catalog import IMPLS, Case, Impl
from .report import fmt


@dataclass
class Plan:
    cases: List[Case]
    impls: Optional[List[str]]  # None = every implementation of each case
    repeat: int
    quick: bool

    def steps(self) -> List[Tuple[Case, int, Impl]]:
        out: List[Tuple[Case, int, Impl]] = []
        for case in self.cases:
            impls = [IMPLS[i] for i in case.impls if self.impls is None or i in self.impls]
            for rep in range(self.repeat):
                out.extend((case, rep, impl) for impl in impls)
        return out


def kiwipy09_python(explicit: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """The kiwipy 0.9 interpreter (created by scripts/kiwipy09-venv), or why there is none."""
    return venv_python("kiwipy09-venv", explicit)


def aiida_zmq_python(explicit: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """The interpreter with aiida-core's ZeroMQ broker (scripts/aiida-zmq-venv), or why not."""
    return venv_python("aiida-zmq-venv", explicit)


def venv_python(script: str, explicit: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """``explicit``, or the interpreter that ``scripts/<script>`` creates (once) and prints."""
    if explicit:
        return explicit, None
    try:
        proc = subprocess.run(
            [str(ROOT / "scripts" / script)],
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"scripts/{script} failed: {exc}"
    return proc.stdout.strip().splitlines()[-1], None


def child_env(impl: Optional[Impl] = None) -> Dict[str, str]:
    # No PYTHONPATH: the kiwipy 0.9 interpreter must not see src/kiwipy. Ours may be pointed
    # at a frozen copy of the sources with KIWIPY_BENCH_SRC (a tree others edit while a long
    # run goes on can be caught half-way through a change).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["KIWIPY_BENCH_URL"] = URL
    src = os.environ.get("KIWIPY_BENCH_SRC")
    if src and impl is not None and impl.interpreter == "ours":
        env["PYTHONPATH"] = src
    return env


async def _delete_aio(queues: List[str], exchanges: List[str]) -> None:
    import aio_pika

    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


def delete(queues: List[str], exchanges: List[str]) -> Optional[str]:
    """Delete queues and exchanges by name (deleting a missing one is not an error), with
    pika, or aio-pika where pika is not installed (a .venv without the bench extra)."""
    if not queues and not exchanges:
        return None
    try:
        import pika
    except ImportError:
        try:
            asyncio.run(_delete_aio(queues, exchanges))
        except Exception as exc:
            return f"deleting {queues + exchanges}: {exc!r}"
        return None
    try:
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        try:
            channel = connection.channel()
            for queue in queues:
                channel.queue_delete(queue)
            for exchange in exchanges:
                channel.exchange_delete(exchange)
        finally:
            connection.close()
    except Exception as exc:
        return f"deleting {queues + exchanges}: {exc!r}"
    return None


def cleanup(names: Names) -> Optional[str]:
    """Delete every queue and exchange the measurement may have declared."""
    return delete(names.queues(), names.exchanges())


def _parse(stdout: str) -> Optional[Dict[str, Any]]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)  # type: ignore[no-any-return]
            except ValueError:
                return None
    return None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_child(case: Case, impl: Impl, python: str, prefix: str, quick: bool) -> Dict[str, Any]:
    n = case.quick_n if quick else case.n
    cmd = [python, "-m", "benchmarks._child", "--case", case.name, "--impl", impl.name]
    cmd += ["--variant", impl.variant, "--n", str(n), "--prefix", prefix]
    cmd += ["--params", json.dumps(case.params)] + (["--quick"] if quick else [])
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=child_env(impl),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: peers included, killed together
    )
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=case.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        stdout, stderr = proc.communicate()
    except BaseException:  # interrupted: take the child and its peers down with us
        _kill_group(proc.pid)
        proc.wait()
        raise
    _kill_group(proc.pid)  # peers left behind by a crashed child
    result = _parse(stdout) or {"status": "error", "error": f"no result (exit {proc.returncode})"}
    if timed_out:
        result = {"status": "error", "error": f"timed out after {case.timeout} s"}
    if result.get("status") != "ok":
        result["stderr_tail"] = stderr.splitlines()[-15:]
    return result


def run_step(
    case: Case, rep: int, impl: Impl, seq: int, pythons: Dict[str, Optional[str]], quick: bool
) -> Dict[str, Any]:
    prefix = f"bench-{os.getpid()}-{case.name}-{seq}"
    python = pythons.get(impl.interpreter)
    base = {"case": case.name, "impl": impl.name, "rep": rep, "prefix": prefix}
    if python is None:
        reason = pythons.get(f"{impl.interpreter}-error") or "interpreter unavailable"
        return {**base, "status": "error", "error": reason}
    start, load = time.monotonic(), os.getloadavg()[0]
    try:
        result = run_child(case, impl, python, prefix, quick)
    finally:
        if impl.variant in SQLITE_VARIANTS:  # no broker names; a killed child's directory
            problem = None
            left = leftover_dirs(prefix)
        else:
            problem, left = cleanup(Names(prefix)), []
    if left:
        result["removed_dirs"] = left
    result.update(base)
    result["elapsed_s"] = time.monotonic() - start
    result["load1_before"] = load  # the machine is shared: a high value explains an outlier
    if problem:
        result["cleanup_error"] = problem
    return result


def _progress(i: int, total: int, result: Dict[str, Any], case: Case) -> str:
    status = result.get("status")
    if status == "ok":
        metric = case.metrics[0]
        value = result.get("metrics", {}).get(metric.name)
        shown = f"{fmt(value)} {metric.unit}" if isinstance(value, (int, float)) else "-"
    elif status == "n/a":
        shown = "n/a: " + str(result.get("reason", ""))
    else:
        shown = "ERROR: " + str(result.get("error", ""))[:90]
    head = f"[{i:>3}/{total}] {case.name:<20} {result['impl']:<21} rep {result['rep'] + 1}"
    return f"{head}  {shown}  ({result.get('elapsed_s', 0.0):.1f} s)"


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_plan(plan: Plan, pythons: Dict[str, Optional[str]]) -> Tuple[List[Dict[str, Any]], bool]:
    """Run every step; on Ctrl-C or SIGTERM stop early (cleaning up) and say so."""
    steps = plan.steps()
    results: List[Dict[str, Any]] = []
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for seq, (case, rep, impl) in enumerate(steps, start=1):
            result = run_step(case, rep, impl, seq, pythons, plan.quick)
            results.append(result)
            print(_progress(seq, len(steps), result, case), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted: writing what was measured so far", file=sys.stderr)
        return results, True
    finally:
        signal.signal(signal.SIGTERM, previous)
    return results, False


def leftovers() -> Dict[str, Any]:
    """Queues/exchanges of this run still on the broker (there should be none); deletes them.

    This is the backstop for names the implementation under test declares beyond those in
    ``Names`` (they are found by prefix and deleted by their exact name).
    """
    mark = f"bench-{os.getpid()}-"
    found: Dict[str, List[str]] = {}
    for kind in ("queues", "exchanges"):
        try:
            proc = subprocess.run(
                ["rabbitmqctl", "-q", f"list_{kind}", "name", "--no-table-headers"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return {"checked": False, "why": repr(exc)}
        found[kind] = [n for n in proc.stdout.split() if n.startswith(mark)]
    problem = delete(found["queues"], found["exchanges"])
    return {"checked": True, **found, "deleted": problem is None, "problem": problem}
