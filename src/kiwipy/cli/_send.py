"""``kiwipy send``, ``kiwipy rpc`` and ``kiwipy broadcast``: one message out, and for a task
waited for or an RPC, its result or reply printed."""

from __future__ import annotations

import argparse
from typing import Callable

from .. import exceptions
from ._common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    connect_from_args,
    err,
    format_value,
    out,
    queue_name,
    read_body,
    wait_result,
)

__all__ = ("cmd_broadcast", "cmd_rpc", "cmd_send")


def cmd_send(args: argparse.Namespace) -> int:
    """Send a task; with ``--wait`` wait for its result and print it."""
    body = read_body(args)
    queue = queue_name(args)
    with connect_from_args(args) as communicator:
        future = _guard_send(lambda: communicator.task_send(body, no_reply=not args.wait))
        if not args.wait:
            err(f"kiwipy send: task sent to queue {queue!r}")
            return EXIT_OK
        hint = f" (is a worker taking tasks from queue {queue!r}?)"
        out(format_value(wait_result(future, args.timeout, "result", hint)))
    return EXIT_OK


def cmd_rpc(args: argparse.Namespace) -> int:
    """Call an RPC subscriber and print its reply."""
    body = read_body(args)
    with connect_from_args(args) as communicator:
        try:
            future = _guard_send(lambda: communicator.rpc_send(args.recipient, body))
        except exceptions.UnroutableError:
            raise CliError(
                f"nobody answers RPCs as {args.recipient!r} (UnroutableError); "
                "check the identifier and that the server runs on the same exchange"
            ) from None
        out(format_value(wait_result(future, args.timeout, "reply")))
    return EXIT_OK


def cmd_broadcast(args: argparse.Namespace) -> int:
    """Send a broadcast with optional sender, subject and correlation id."""
    body = read_body(args, required=False)
    with connect_from_args(args) as communicator:
        _guard_send(
            lambda: communicator.broadcast_send(
                body, sender=args.sender, subject=args.subject, correlation_id=args.correlation_id
            )
        )
    err(f"kiwipy broadcast: sent (subject {args.subject!r}, sender {args.sender!r})")
    return EXIT_OK


def _guard_send(send: Callable[[], object]) -> object:
    """Run a send, turning encoding errors and call timeouts into one-line errors."""
    try:
        return send()
    except exceptions.EncodingError as exc:
        raise CliError(f"the body cannot be sent: {exc}", EXIT_USAGE) from None
    except exceptions.TimeoutError:
        raise CliError("the broker did not confirm the message in time") from None
