"""How a failed connection attempt is described (kiwipy.rmq.connection._connecting), case by case, for
the failures the integration tests cannot make on loopback (issue 19, item 4)."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
from aiormq import exceptions as amqp_errors
from pamqp import commands as spec
from pamqp import exceptions as pamqp_errors
from yarl import URL

import kiwipy
from kiwipy.rmq.connection import _access, _connecting


def caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


def close(code: int, text: str) -> BaseException:
    return pamqp_errors.AMQPInternalError(
        "one of ['Connection.OpenOk']", spec.Connection.Close(reply_code=code, reply_text=text)
    )


CASES = [
    (asyncio.TimeoutError(), kiwipy.ConnectFailed, "no answer from h.example:5672 in time"),
    (
        caused(amqp_errors.AMQPConnectionError(-2, "x"), socket.gaierror(-2, "Name unknown")),
        kiwipy.ConnectFailed,
        "host name 'h.example' not found (Name unknown)",
    ),
    (
        caused(amqp_errors.AMQPConnectionError(1, "x"), ssl.SSLCertVerificationError(1, "bad")),
        _access.TlsFailure,  # a TlsError that is also aiormq's error, as in kiwipy 0.9
        "TLS certificate was not accepted",
    ),
    (amqp_errors.IncompatibleProtocolError(), kiwipy.ConnectFailed, "does not speak AMQP"),
    (
        close(530, "NOT_ALLOWED - access to vhost 'dev' refused for user 'bob'"),
        kiwipy.AccessRefused,
        "access to virtual host 'dev' refused for user 'bob'",
    ),
    (close(530, "NOT_ALLOWED - vhost dev not found"), kiwipy.AccessRefused, "'dev' not found"),
    (
        amqp_errors.ProbableAuthenticationError("ACCESS_REFUSED - Login was refused"),
        _access.LoginRefused,  # an AccessRefused that is also aiormq's error, as in kiwipy 0.9
        "access refused for user 'bob'",
    ),
]


@pytest.mark.parametrize(("exc", "kind", "words"), CASES)
def test_described(exc: BaseException, kind: type, words: str) -> None:
    error = _connecting.connect_error(exc, URL("amqp://bob:pw-secret@h.example:5672/dev"))
    assert type(error) is kind
    assert words in str(error)
    assert "pw-secret" not in str(error) and error.url == "amqp://bob:***@h.example:5672/dev"


def test_password_in_a_message_is_masked() -> None:
    exc = amqp_errors.AMQPConnectionError("odd failure mentioning pw-secret")
    error = _connecting.connect_error(exc, URL("amqp://bob:pw-secret@h.example/"))
    assert "pw-secret" not in str(error)


@pytest.mark.parametrize(
    ("params", "url"),
    [
        (None, "amqp://guest:guest@localhost/"),
        ("amqp://u:p@h:1/v", "amqp://u:p@h:1/v"),
        ({"url": "amqp://u:p@h/"}, "amqp://u:p@h/"),
        ({"host": "h", "login": "u", "virtualhost": "v"}, "amqp://u:guest@h:5672/v"),
        ({"host": "h", "ssl": True}, "amqps://guest:guest@h:5671/"),
    ],
)
def test_target_url(params: object, url: str) -> None:
    assert str(_connecting.target_url(params)) == url  # type: ignore[arg-type]


async def test_other_errors_pass_through() -> None:
    async def broken() -> None:
        raise KeyError("a bug, not a connection failure")

    with pytest.raises(KeyError):
        await _connecting.opening("amqp://h/", broken())


def test_a_password_that_is_also_a_word_of_the_message_hides_nothing_else() -> None:
    """Only outside text is masked: with ``guest:guest`` the user is still named, and a
    password such as ``wrong`` does not blank the word in the explanation."""
    refused = amqp_errors.ProbableAuthenticationError("ACCESS_REFUSED - Login was refused")
    error = _connecting.connect_error(refused, URL("amqp://guest:guest@h.example/"))
    assert "access refused for user 'guest'" in str(error)
    assert error.url == "amqp://guest:***@h.example/"
    error = _connecting.connect_error(refused, URL("amqp://bob:wrong@h.example/"))
    assert "wrong user name or password" in str(error)
    leaked = amqp_errors.AMQPConnectionError("failed for amqp://bob:wrong@h.example/")
    assert "bob:wrong@" not in str(_connecting.connect_error(leaked, URL("amqp://bob:wrong@h/")))
