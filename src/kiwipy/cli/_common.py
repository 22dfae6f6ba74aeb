"""What every ``kiwipy`` subcommand shares: output, errors, connecting, bodies and results.

Rules of the command line:

* Data (results, broadcasts, inspection) goes to stdout; everything meant for a person
  (progress, summaries, errors) goes to stderr.
* A failure is one line on stderr, ``kiwipy <command>: error: <what happened>``, and a
  non-zero exit: :data:`EXIT_FAILURE` when something went wrong at run time (broker down,
  no reply in time, the remote side raised), :data:`EXIT_USAGE` when the input is wrong
  (bad URL, body or callable). Never a traceback, unless ``KIWIPY_DEBUG`` is set.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import importlib
import importlib.util
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Callable, TypeVar

from .. import encoders, exceptions
from .._portal import loop_choice
from ..communications import Communicator, connect

__all__ = (
    "DEFAULT_QUEUE",
    "DEFAULT_URL",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "age",
    "connect_from_args",
    "describe",
    "err",
    "format_value",
    "is_sqlite",
    "load_callable",
    "mask_url",
    "out",
    "queue_name",
    "read_body",
    "remote_error",
    "wait_result",
)

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_QUEUE = "kiwipy.tasks"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

_SCHEMES = ("amqp://", "amqps://", "memory://", "sqlite://")
#: How text meant as a JSON object, array or string starts (``--as auto``).
_JSON_STARTS = ("{", "[", '"')


T = TypeVar("T")


class CliError(Exception):
    """A failure to report as one line on stderr, with the exit code to return."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def out(text: str) -> None:
    """Write one line of data to stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str, end: str = "\n") -> None:
    """Write a line for a person to stderr."""
    sys.stderr.write(text + end)
    sys.stderr.flush()


def describe(exc: BaseException) -> str:
    """:returns: a one-line description of *exc*: its type and the first line of its text."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 300:
        first = first[:297] + "..."
    name = type(exc).__name__
    return f"{name}: {first}" if first else name


def mask_url(url: str) -> str:
    """:returns: *url* with its password replaced by ``***``, fit to print."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url


def queue_name(args: argparse.Namespace) -> str:
    """:returns: the task queue the command works on."""
    return getattr(args, "queue", None) or DEFAULT_QUEUE


def _is_amqp(url: str) -> bool:
    return url.startswith(("amqp://", "amqps://"))


def is_sqlite(url: str) -> bool:
    """Whether *url* names a SQLite file (the ``sqlite://`` transport)."""
    return url.startswith("sqlite://")


def check_url(url: str) -> None:
    """:raises CliError: (usage) unless *url* has a scheme kiwipy can connect to."""
    if not url.startswith(_SCHEMES):
        raise CliError(
            f"bad URL {mask_url(url)!r}: it must start with amqp://, amqps://, memory:// or "
            "sqlite:// (sqlite:///relative/path.db, sqlite:////absolute/path.db)",
            EXIT_USAGE,
        )
    if _is_amqp(url):
        from ..rmq._options import endpoint_urls

        try:  # one endpoint per host: amqp://u:p@host1:5672,host2:5672/ (docs/cluster.md)
            for endpoint in endpoint_urls(url):
                parts = urllib.parse.urlsplit(endpoint)
                _ = parts.port  # raises ValueError for a port that is not a number
                if not parts.hostname:
                    raise ValueError("it names no host")
        except ValueError as exc:
            raise CliError(f"bad URL {mask_url(url)!r}: {exc}", EXIT_USAGE) from None
    if is_sqlite(url):
        from ..sqlite import check_sqlite_url

        try:  # its text names the URL and the expected forms
            check_sqlite_url(url)
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        return
    try:
        _check_query(url)
    except ValueError as exc:
        raise CliError(f"bad URL {mask_url(url)!r}: {exc}", EXIT_USAGE) from None


def _check_query(url: str) -> None:
    """:raises ValueError: for a query parameter the URL's transport does not read or
    cannot use (checked by the transport's own rules)."""
    if _is_amqp(url):
        from ..rmq._options import check_url_query

        check_url_query(url)
    else:
        from ..memory import broker_name

        broker_name(url)


def connect_options(args: argparse.Namespace) -> dict[str, Any]:
    """:returns: the keyword arguments of :func:`kiwipy.connect` given by the options."""
    options: dict[str, Any] = {"encoder": encoders.get_encoder(args.encoder)}
    names = {
        "message_exchange": "message_exchange",
        "task_exchange": "task_exchange",
        "queue": "task_queue",
        "prefetch": "task_prefetch_count",
    }
    for attribute, option in names.items():
        value = getattr(args, attribute, None)
        if value is not None:
            options[option] = value
    return options


def connect_from_args(args: argparse.Namespace, **extra: Any) -> Communicator:
    """Connect the thread communicator the options describe.

    :raises CliError: for a bad URL, a missing optional dependency or a broker that cannot
        be reached.
    """
    url: str = args.url
    check_url(url)
    try:
        loop_choice()  # a wrong KIWIPY_EVENT_LOOP is not a bad URL
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    options = {**connect_options(args), **extra}
    try:
        return connect(url, **options)
    except ImportError as exc:
        install = "; install it with: pip install 'kiwipy[rmq]'" if _is_amqp(url) else ""
        raise CliError(
            f"the {url.split(':', 1)[0]}:// transport is not available ({describe(exc)}){install}"
        ) from None
    except ValueError as exc:
        raise CliError(f"bad URL {mask_url(url)!r}: {describe(exc)}", EXIT_USAGE) from None
    except exceptions.ConnectFailed as exc:  # says why, with the password masked
        raise CliError(str(exc)) from None
    except Exception as exc:
        raise CliError(f"cannot connect to {mask_url(url)}: {describe(exc)}") from None


#: Seconds the broker commands (``inspect``, ``dead``) wait for a connection.
CONNECT_TIMEOUT = 3.0


async def open_broker(url: str, opening: Awaitable[T]) -> T:
    """:returns: what *opening* (a connection attempt to *url*) gives, within
    :data:`CONNECT_TIMEOUT` seconds.

    :raises CliError: saying why the connection failed (the URL's password masked).
    """
    from ..rmq.connection import (
        _connecting,  # only broker commands get here: the rmq extra is there
    )

    try:
        return await asyncio.wait_for(_connecting.opening(url, opening), CONNECT_TIMEOUT)
    except asyncio.TimeoutError:
        raise CliError(
            f"cannot connect to {mask_url(url)}: no answer within {CONNECT_TIMEOUT:g} s"
        ) from None
    except exceptions.ConnectFailed as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:
        raise CliError(f"cannot connect to {mask_url(url)}: {describe(exc)}") from None


def read_body(args: argparse.Namespace, required: bool = True) -> Any:
    """The message body given on the command line.

    It comes from the ``body`` argument, from ``--file PATH``, or from stdin when the
    argument is ``-``. With ``--as auto`` (the default) text that parses as JSON is sent as
    the value it denotes (``42``, ``"text"``, ``{"a": 1}``) and anything else as a string,
    except text that starts like JSON (``{``, ``[`` or ``"``) but does not parse: that is
    refused, since it is almost always a typo; ``--as json`` insists on JSON and
    ``--as string`` always sends the text as a string.

    :raises CliError: (usage) for a missing, unreadable or invalid body.
    """
    text = _body_text(args)
    if text is None:
        if required:
            raise CliError(
                "no message body: give it as an argument, with --file, or - for stdin", EXIT_USAGE
            )
        return None
    mode = getattr(args, "body_as", "auto")
    if mode == "string":
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if mode == "json":
            raise CliError(f"the body is not valid JSON: {exc}", EXIT_USAGE) from None
        if text.lstrip()[:1] in _JSON_STARTS:
            raise CliError(
                f"the body looks like JSON but is not valid JSON ({exc}); to send this text "
                "as a plain string, add --as string",
                EXIT_USAGE,
            ) from None
        return text


def _body_text(args: argparse.Namespace) -> str | None:
    body: str | None = getattr(args, "body", None)
    path: str | None = getattr(args, "file", None)
    if body is not None and path is not None:
        raise CliError("give the body either as an argument or with --file, not both", EXIT_USAGE)
    try:
        if path is not None:
            data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        elif body == "-":
            data = sys.stdin.buffer.read()
        elif body is not None:
            return body
        else:
            return None
    except OSError as exc:
        raise CliError(f"cannot read the body: {describe(exc)}", EXIT_USAGE) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"the body is not UTF-8 text: {exc}", EXIT_USAGE) from None
    # A file or a pipe normally ends with a newline that is not part of the message.
    return text[:-1] if text.endswith("\n") else text


def age(seconds: float | None) -> str:
    """:returns: *seconds* as a short age: ``42s``, ``5m``, ``3h``, ``2d`` (``?`` for None)."""
    if seconds is None:
        return "?"
    total = max(int(seconds), 0)
    for unit, size, above in (("d", 86400, 172800), ("h", 3600, 7200), ("m", 60, 120)):
        if total >= above:
            return f"{total // size}{unit}"
    return f"{total}s"


def format_value(value: Any) -> str:
    """:returns: *value* as one line of JSON, or its ``repr`` if it is not JSON data."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)


def wait_result(future: Any, timeout: float, what: str, hint: str = "") -> Any:
    """Wait for *future* (and the futures it resolves to, kiwipy's nested replies).

    :raises CliError: if the whole chain takes longer than *timeout* seconds, or the remote
        side raised.
    """
    deadline = time.monotonic() + timeout
    value = future
    try:
        while isinstance(value, concurrent.futures.Future):
            value = value.result(timeout=max(deadline - time.monotonic(), 0.0))
    except exceptions.TimeoutError:
        raise CliError(f"no {what} within {timeout:g} s{hint}") from None
    except exceptions.RemoteException as exc:
        raise remote_error(exc) from None
    except concurrent.futures.CancelledError:
        raise CliError(f"the {what} was cancelled by the other side") from None
    except exceptions.KiwiError as exc:
        raise CliError(f"no {what}: {describe(exc)}") from None
    return value


def remote_error(exc: exceptions.RemoteException) -> CliError:
    """:returns: the error to report for an exception raised on the remote side."""
    message = str(exc.args[0]) if exc.args else ""
    remote_type = getattr(exc, "remote_type", None)
    if remote_type:
        name = remote_type.removeprefix("builtins.")
        message = f"{name}: {message}" if message else name
    return CliError(f"the remote side raised {message or 'an exception'}")


def load_callable(spec: str) -> Callable[..., Any]:
    """Import the callable named by *spec*: ``module:function``, ``package.module:Class.method``
    or ``path/to/file.py:function``. The current directory is importable, as with
    ``python -m``.

    :raises CliError: (usage) when it cannot be imported or is not callable.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(f"{spec!r} is not of the form module:function", EXIT_USAGE)
    try:
        module = _import(module_name)
    except CliError:
        raise
    except BaseException as exc:  # a module may even call sys.exit() when imported
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise CliError(f"cannot import {module_name!r}: {describe(exc)}", EXIT_USAGE) from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"{module_name!r} has no attribute {attribute!r}", EXIT_USAGE) from None
    if not callable(target):
        raise CliError(f"{spec!r} is not callable", EXIT_USAGE)
    func: Callable[..., Any] = target
    return func


def _import(module_name: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise CliError(f"cannot import {module_name!r}: no such file", EXIT_USAGE)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:  # pragma: no cover - only for odd paths
            raise CliError(f"cannot import {module_name!r}", EXIT_USAGE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(module_name)
