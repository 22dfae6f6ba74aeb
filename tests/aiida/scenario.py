"""Drives AiiDA itself for the end-to-end test: ``python scenario.py PHASE STATE_FILE``.

Runs with the Python of a virtual environment that holds aiida-core (``scripts/aiida-venv``),
never inside pytest. Every phase reads and extends one JSON state file, so phases can run under
different environments one after the other (kiwipy 0.9, then this library) on the same AiiDA
profile, as an installation that switches library does. AiiDA's own command line (``verdi``) is
used wherever a user would use it.

Phases (``KIWIPY_E2E_ANY=1`` lets ``main`` run on kiwipy 0.9 too, for comparison figures):

* ``setup``: a throw-away profile on SQLite storage (``core.sqlite_dos``) whose broker is the
  RabbitMQ vhost named in the state, with the daemon's default of two workers.
* ``legacy``: (run with kiwipy 0.9) the daemon runs a looping process and pauses it over RPC,
  stops; then processes are submitted while no daemon runs, so their tasks wait in the queues
  kiwipy 0.9 declared.
* ``main``: (run with this library) the daemon, two workers: the queued processes finish, the
  paused one is played and finishes; 20 work chains with child processes finish with the right
  results although ``verdi daemon restart`` runs in the middle of the batch; ``verdi process
  pause``, ``play`` and ``kill`` reach running processes and take effect.

Waits poll AiiDA's database (the observable outcome) with bounds of a minute or more; the
figures each phase measures go into the state file for the test to report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
#: Bound for one process (or batch) to reach the awaited state on a loaded 2-core machine.
WAIT = 120.0


def main() -> None:
    phase, state_path = sys.argv[1], Path(sys.argv[2])
    state = json.loads(state_path.read_text())
    os.environ["AIIDA_PATH"] = state["aiida_path"]
    # The daemon's workers import the processes of this test from here (AiiDA passes the
    # caller's sys.path on to them as PYTHONPATH).
    os.environ["PYTHONPATH"] = str(HERE)
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    sys.path.insert(0, str(HERE))
    {"setup": setup, "legacy": legacy, "main": main_phase}[phase](state)
    state_path.write_text(json.dumps(state, indent=1))


def verdi(*args: str, timeout: float = WAIT) -> str:
    done = subprocess.run(
        [str(BIN / "verdi"), *args], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(f"verdi {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def wait_until(condition: Callable[[], bool], what: str, bound: float = WAIT) -> float:
    """Seconds until *condition* held; AssertionError naming *what* after *bound* seconds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > bound:
            raise AssertionError(f"not within {bound:.0f} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - start


def setup(state: dict[str, Any]) -> None:
    profile, vhost = state["profile"], state["vhost"]
    verdi(
        "profile", "setup", "core.sqlite_dos", "-n", "-p", profile,
        "--email", "e2e@kiwipy.test", "--first-name", "kiwipy", "--last-name", "e2e",
        "--institution", "kiwipy", "--broker", "core.rabbitmq",
        "--filepath", str(Path(state["aiida_path"]) / "storage"),
    )  # fmt: skip
    verdi(
        "profile", "configure-broker", "core.rabbitmq", "-f", "-n", profile,
        "--broker-protocol", "amqp", "--broker-username", "guest", "--broker-password", "guest",
        "--broker-host", "127.0.0.1", "--broker-port", "5672", "--broker-virtual-host", vhost,
    )  # fmt: skip
    verdi("config", "set", "daemon.default_workers", "2")
    # AiiDA's default daemon timeout (2 s) is too short for busy workers to stop, with kiwipy
    # 0.9 as with this library: ``verdi daemon restart`` then says "Stopping the daemon...
    # FAILED ... Connection to the daemon timed out".
    verdi("config", "set", "daemon.timeout", "60")


def _profile(state: dict[str, Any]) -> None:
    from aiida import load_profile

    load_profile(state["profile"], allow_switch=True)


def _looper() -> Any:
    from aiida.engine import submit
    from workflows import LooperWorkChain

    from aiida import orm

    gate = orm.Int(0).store()
    return submit(LooperWorkChain, gate=gate), gate


def _rounds(gate: Any) -> int:
    """Rounds the gate's :class:`GateWorkChain` has run (it counts them on the gate node)."""
    from aiida import orm

    return int(orm.load_node(gate.pk).base.extras.get("rounds", 0))


def _submit_parents(xs: range) -> list[Any]:
    from aiida.engine import submit
    from workflows import ParentWorkChain

    from aiida import orm

    return [submit(ParentWorkChain, x=orm.Int(x)) for x in xs]


def _check_parents(pks: list[int]) -> list[str]:
    """Problems with the finished parents (empty when all finished 0 with the right total)."""
    from aiida import orm

    problems = []
    for pk in pks:
        node = orm.load_node(pk)
        x = node.inputs.x.value
        total = node.outputs.total.value if "total" in node.outputs else None
        if node.exit_status != 0 or total != 3 * x + 2:
            problems.append(
                f"{pk}: state {node.process_state} exit {node.exit_status} total {total}"
            )
    return problems


def _terminated(pks: list[int]) -> Callable[[], bool]:
    from aiida import orm

    return lambda: all(orm.load_node(pk).is_terminated for pk in pks)


def legacy(state: dict[str, Any]) -> None:
    import kiwipy

    assert kiwipy.__version__.startswith("0.9"), kiwipy.__version__
    _profile(state)
    verdi("daemon", "start")
    try:
        looper, gate = _looper()
        wait_until(lambda: _rounds(gate) >= 2, "the looper runs under kiwipy 0.9")
        verdi("process", "pause", str(looper.pk), "--timeout", "60")
        wait_until(lambda: looper.paused, "the looper is paused under kiwipy 0.9")
    finally:
        verdi("daemon", "stop")
    queued = _submit_parents(range(100, 103))
    state["legacy"] = {
        "looper": looper.pk,
        "gate": gate.pk,
        "queued": [node.pk for node in queued],
    }


def main_phase(state: dict[str, Any]) -> None:
    import kiwipy

    assert os.environ.get("KIWIPY_E2E_ANY") or not kiwipy.__version__.startswith("0.9"), (
        kiwipy.__version__
    )
    _profile(state)
    figures: dict[str, float] = {}
    start = time.monotonic()
    verdi("daemon", "start")
    figures["daemon_start_s"] = time.monotonic() - start
    try:
        if "legacy" in state:
            figures.update(_switched_from_legacy(state["legacy"]))
        figures.update(_batch_with_restart())
        figures.update(_pause_play_kill())
    finally:
        verdi("daemon", "stop")
    state["main"] = {"figures": {k: round(v, 2) for k, v in figures.items()}}


def _switched_from_legacy(legacy_state: dict[str, Any]) -> dict[str, float]:
    from aiida import orm

    queued = legacy_state["queued"]
    took = wait_until(_terminated(queued), "tasks queued under kiwipy 0.9 run")
    problems = _check_parents(queued)
    assert not problems, f"tasks queued under kiwipy 0.9: {problems}"
    looper = orm.load_node(legacy_state["looper"])
    assert looper.paused, "the process paused under kiwipy 0.9 is still paused"
    verdi("process", "play", str(looper.pk), "--timeout", "60")
    wait_until(lambda: not orm.load_node(looper.pk).paused, "play takes effect")
    gate = orm.load_node(legacy_state["gate"])
    before = _rounds(gate)
    wait_until(lambda: _rounds(gate) > before, "the process it waits for runs")
    gate.base.extras.set("open", True)
    wait_until(_terminated([looper.pk]), "the played process finishes")
    looper = orm.load_node(looper.pk)
    assert looper.exit_status == 0, (looper.process_state, looper.exit_status)
    return {"legacy_queued_done_s": took}


def _batch_with_restart() -> dict[str, float]:
    from aiida import orm

    start = time.monotonic()
    parents = [node.pk for node in _submit_parents(range(20))]
    submitted = time.monotonic() - start
    # Restart while part of the batch has finished and part has not.
    wait_until(
        lambda: sum(orm.load_node(pk).is_terminated for pk in parents) >= 3,
        "the first work chains of the batch finish",
    )
    unfinished = sum(not orm.load_node(pk).is_terminated for pk in parents)
    assert unfinished > 0, "the batch finished before the restart could interrupt it"
    verdi("daemon", "restart")
    wait_until(_terminated(parents), "all 20 work chains finish after the restart")
    problems = _check_parents(parents)
    assert not problems, f"work chains of the batch: {problems}"
    return {
        "batch_submit_s": submitted,
        "batch_total_s": time.monotonic() - start,
        "unfinished_at_restart": float(unfinished),
    }


def _pause_play_kill() -> dict[str, float]:
    from aiida import orm

    to_pause, gate = _looper()
    to_kill, kill_gate = _looper()
    wait_until(lambda: _rounds(gate) >= 2 and _rounds(kill_gate) >= 2, "the loopers run")
    start = time.monotonic()
    verdi("process", "pause", str(to_pause.pk), "--timeout", "60")
    pause_s = time.monotonic() - start
    wait_until(lambda: orm.load_node(to_pause.pk).paused, "pause takes effect")
    start = time.monotonic()
    verdi("process", "play", str(to_pause.pk), "--timeout", "60")
    play_s = time.monotonic() - start
    wait_until(lambda: not orm.load_node(to_pause.pk).paused, "play takes effect")
    start = time.monotonic()
    verdi("process", "kill", str(to_kill.pk), "--timeout", "60")
    kill_s = time.monotonic() - start
    wait_until(lambda: orm.load_node(to_kill.pk).is_killed, "kill takes effect")
    gate.base.extras.set("open", True)  # what the played process waits for can now finish
    wait_until(_terminated([to_pause.pk]), "the played process finishes")
    assert orm.load_node(to_pause.pk).exit_status == 0
    return {"pause_s": pause_s, "play_s": play_s, "kill_s": kill_s}


if __name__ == "__main__":
    main()
