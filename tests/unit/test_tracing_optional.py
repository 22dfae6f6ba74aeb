"""Without the ``kiwipy[otel]`` extra nothing of OpenTelemetry is imported (issue 17)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# ``sys.modules[name] = None`` makes ``import name`` raise ImportError, as if it were not
# installed; the round below goes through every hook (send, dispatch, thread facade).
_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["opentelemetry"] = None

    import kiwipy
    import kiwipy.rmq
    from kiwipy import _tracing, memory

    assert _tracing.ENABLED is False
    with memory.connect("memory://no-otel", encoder="json") as comm:
        heard = []
        comm.add_task_subscriber(lambda _c, task: task * 2)
        comm.add_rpc_subscriber(lambda _c, msg: msg + 1, "rpc")
        comm.add_broadcast_subscriber(lambda _c, body, *_: heard.append(body))
        assert comm.task_send(21).result(timeout=5) == 42
        assert comm.rpc_send("rpc", 1).result(timeout=5) == 2
        comm.broadcast_send("hi")
    loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry."))
    assert sys.modules["opentelemetry"] is None and not loaded, loaded
    print("ok")
    """
)


def test_nothing_of_opentelemetry_is_imported_without_the_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_api_alone_enables_tracing() -> None:
    """With ``opentelemetry-api`` importable (the dev extra has it), the hooks are on."""
    from kiwipy import _tracing

    assert _tracing.ENABLED is True
