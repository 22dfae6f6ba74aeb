"""The broker's refusals as AccessRefused: which permission each operation needs."""

from __future__ import annotations

from typing import Optional

import pytest
from aiormq import exceptions as amqp_errors
from yarl import URL

import kiwipy
from kiwipy.rmq.connection import _access, _connecting


def refused(kind: str, name: str) -> amqp_errors.ChannelAccessRefused:
    return amqp_errors.ChannelAccessRefused(
        403, f"ACCESS_REFUSED - access to {kind} '{name}' in vhost 'v' refused for user 'u'"
    )


# (method or None, what, resource kind, the permission named)
CASES: list[tuple[Optional[str], str, str, str]] = [
    ("exchange_declare", "declaring exchange 'x'", "exchange", "configure"),
    ("queue_declare", "declaring queue 'q'", "queue", "configure or read"),
    ("queue_declare", "declaring queue 'q'", "exchange", "write"),  # its dead-letter exchange
    ("queue_bind", "binding 'q'", "queue", "write"),
    ("queue_bind", "binding 'q'", "exchange", "read"),
    ("basic_publish", "task to 'q'", "exchange", "write"),
    ("basic_consume", "consuming 'q'", "queue", "read"),
    (None, "getting a task from 'q'", "queue", "read"),
    (None, "publishing to 'x'/'q'", "exchange", "write"),
    (None, "something else", "queue", "configure, write or read"),
]


@pytest.mark.parametrize(("method", "what", "kind", "permission"), CASES)
def test_the_permission_is_named(
    method: Optional[str], what: str, kind: str, permission: str
) -> None:
    error = _access.refusal(refused(kind, "res"), what, method)
    assert isinstance(error, kiwipy.AccessRefused) and isinstance(error, PermissionError)
    assert error.permission == permission
    assert (error.resource, error.user, error.vhost) == (f"{kind} 'res'", "u", "v")
    assert str(error).startswith(f"access refused {what}: user 'u' lacks the {permission} ")


def test_an_exclusive_queue_in_use_is_no_permission_refusal() -> None:
    """RPC identifiers and lease claims rely on this refusal: it is left to them."""
    exc = amqp_errors.ChannelAccessRefused(
        403, "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
    )
    assert _access.refusal(exc, "declaring queue 'q'", "queue_declare") is None
    assert _access.refusal(ValueError("no"), "x") is None


def test_a_refused_login_is_also_what_kiwipy_09_raised() -> None:
    exc = amqp_errors.ProbableAuthenticationError("ACCESS_REFUSED - Login was refused")
    error = _connecting.connect_error(exc, URL("amqp://bob:pw@127.0.0.1:5672/"))
    assert isinstance(error, kiwipy.AccessRefused)
    assert isinstance(error, amqp_errors.ProbableAuthenticationError)
    assert "refused the login" in str(error)
