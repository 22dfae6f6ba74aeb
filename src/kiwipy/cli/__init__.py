"""The ``kiwipy`` command line (also ``python -m kiwipy``).

Subcommands: ``demo``, ``send``, ``rpc``, ``broadcast``, ``worker``, ``serve``, ``listen``,
``inspect``, ``dead`` and ``move``; ``kiwipy <command> --help`` describes each. The broker URL
comes from ``--url`` (after the command, or before it: ``kiwipy --url URL inspect``), else the
``KIWIPY_URL`` environment variable, else the local RabbitMQ
(``amqp://guest:guest@127.0.0.1:5672/``); the demo defaults to a new SQLite file in a temporary
folder, with its workers as processes of their own.

This module runs a command line (:func:`main`: parsing, exit codes, one-line errors); the
parser is built in :mod:`._parser` from the option groups of :mod:`._options`, and each
command lives in a module of its own (``send``, ``rpc`` and ``broadcast`` in :mod:`._send`).

Exit codes: 0 success, 1 a run-time failure (broker unreachable, no reply in time, the remote
side raised, unknown RPC recipient), 2 bad input (options, URL, body, callable), 130
interrupted. Errors are one line on stderr; set ``KIWIPY_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from ._common import EXIT_FAILURE, EXIT_USAGE, CliError, describe, err, mask_url
from ._parser import build_parser

__all__ = ("build_parser", "main")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with *argv* (default ``sys.argv[1:]``). :returns: the exit code."""
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    label = f"kiwipy {args.command}"
    quiet = _quiet_library_logs()
    try:
        code: int = args.func(args)
        return code
    except CliError as exc:
        err(f"{label}: error: {exc}")
        return exc.code
    except KeyboardInterrupt:
        err(f"{label}: interrupted")
        return 130
    except Exception as exc:
        if os.environ.get("KIWIPY_DEBUG"):
            traceback.print_exc()
        err(f"{label}: error: {describe(exc)} (at {mask_url(args.url)}; KIWIPY_DEBUG=1 for more)")
        return EXIT_FAILURE
    finally:
        logging.getLogger().removeHandler(quiet)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """:returns: the parsed *argv*, with a body given after options between positionals
    (``kiwipy rpc NAME --timeout 5 BODY``), which argparse alone refuses, and the options
    every command takes given before the command (``kiwipy --url URL inspect``)."""
    argv = _shared_options_after_command(list(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(argv)
    if extra and len(extra) == 1 and getattr(args, "body", "") is None:
        if extra[0] == "-" or not extra[0].startswith("-"):
            args.body = extra[0]
            return args
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


#: The options every command takes, accepted before the command too.
_SHARED = ("--url", "--encoder")


def _shared_options_after_command(argv: list[str]) -> list[str]:
    """:returns: *argv* with ``--url``/``--encoder`` (and their values) that come before the
    command moved just after it; unchanged when no command follows them."""
    moved: list[str] = []
    rest = list(argv)
    index = 0
    while index < len(rest) and rest[index].startswith("-"):
        name = rest[index].split("=", 1)[0]
        if name not in _SHARED:
            index += 1
            continue
        width = 1 if "=" in rest[index] else 2
        moved.extend(rest[index : index + width])
        del rest[index : index + width]
    if not moved or index >= len(rest):
        return argv
    return [*rest[: index + 1], *moved, *rest[index + 1 :]]


def _quiet_library_logs() -> logging.Handler:
    """Keep library log records (aio-pika's connection errors, say) off the terminal: the
    command reports failures itself, in one line. ``KIWIPY_DEBUG=1`` shows them."""
    handler: logging.Handler = logging.NullHandler()
    if os.environ.get("KIWIPY_DEBUG"):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
