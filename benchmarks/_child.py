"""One measurement in a fresh process: ``python -m benchmarks._child --case C --variant V ...``.

It prints exactly one JSON line on stdout (everything else goes to stderr): the metrics, or
``"status": "n/a"`` when the implementation lacks the API, or ``"status": "error"`` with the
exception, so a broken implementation is recorded instead of stopping the run.
``--probe`` prints the interpreter's library versions and the broker's server properties.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

from . import (
    _sqlite,
    cases_consume,
    cases_fanout,
    cases_idle,
    cases_memory,
    cases_rpc,
    cases_send,
    cases_zmq,
)
from ._support import Context, Names, NotAvailable, aio_connect, kiwipy_version

Runner = Callable[[Context], Dict[str, Any]]
RUNNERS: Dict[str, Dict[str, Runner]] = {}
_MODULES = (cases_send, cases_consume, cases_memory, cases_rpc, cases_fanout, cases_zmq, cases_idle)
for _module in _MODULES:
    for _case, _runners in _module.RUNNERS.items():  # a case's variants may come from several
        RUNNERS.setdefault(_case, {}).update(_runners)
DISTRIBUTIONS = (
    "kiwipy",
    "aio-pika",
    "aiormq",
    "pamqp",
    "pika",
    "msgpack",
    "PyYAML",
    "psutil",
    "aiida-core",
    "pyzmq",
)


def measure(ctx: Context, impl: str) -> Dict[str, Any]:
    result: Dict[str, Any] = {
        "case": ctx.case,
        "impl": impl,
        "variant": ctx.variant,
        "n": ctx.n,
        "prefix": ctx.names.prefix,
        "pid": os.getpid(),
        "python": sys.version.split()[0],
    }
    start = time.perf_counter()
    try:
        if ctx.variant in _sqlite.VARIANTS:
            # The kiwipy case code of the base variant, on a fresh SQLite file (peers too).
            ctx.variant, synchronous = _sqlite.VARIANTS[ctx.variant]
            with _sqlite.SqliteFile(ctx.names.prefix, synchronous) as db:
                result.update(RUNNERS[ctx.case][ctx.variant](ctx))
                result.setdefault("details", {}).update(db.details())
        else:
            result.update(RUNNERS[ctx.case][ctx.variant](ctx))
        result["status"] = "ok"
    except NotAvailable as exc:
        result.update(status="n/a", reason=str(exc))
    except Exception as exc:
        traceback.print_exc()
        result.update(status="error", error=f"{type(exc).__name__}: {exc}")
    result["wall_s"] = time.perf_counter() - start
    if ctx.variant in ("thread", "async"):
        try:
            result["kiwipy"] = kiwipy_version()
        except Exception as exc:
            result["kiwipy"] = {"error": repr(exc)}
    return result


async def _server_properties() -> Dict[str, str]:
    connection = await aio_connect()
    try:
        props = connection.transport.connection.server_properties
    finally:
        await connection.close()
    keep = ("product", "version", "platform", "cluster_name")
    return {
        k: v.decode() if isinstance(v, bytes) else str(v) for k, v in props.items() if k in keep
    }


def probe(broker: bool) -> Dict[str, Any]:
    from importlib import metadata

    versions: Dict[str, Optional[str]] = {}
    for dist in DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    info: Dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable}
    info["versions"] = versions
    try:
        import yaml

        info["libyaml"] = bool(getattr(yaml, "__with_libyaml__", False))
        info["kiwipy"] = kiwipy_version()
    except Exception as exc:
        info["kiwipy"] = {"error": repr(exc)}
    if broker:
        try:
            info["broker"] = asyncio.run(_server_properties())
        except Exception as exc:
            info["broker"] = {"error": repr(exc)}
    return info


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._child")
    parser.add_argument("--probe", action="store_true", help="print versions and exit")
    parser.add_argument("--broker", action="store_true", help="with --probe: ask the broker too")
    parser.add_argument("--case")
    parser.add_argument("--impl")
    parser.add_argument("--variant")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--prefix")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--params", default="{}", help="case parameters as JSON")
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.broker)), flush=True)
        return 0
    names = Names(args.prefix or f"bench-{os.getpid()}-{args.case}")
    ctx = Context(args.case, args.variant, args.n, names, args.quick, json.loads(args.params))
    print(json.dumps(measure(ctx, args.impl or args.variant), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
