"""Opening a connection to the broker, with failures said in words (issue 19).

aiormq and pamqp report a failed connection attempt in their own terms: a refused login is
``ProbableAuthenticationError``, an unknown virtual host is pamqp's ``AMQPInternalError`` with
a ``Connection.Close`` frame, a closed port is ``AMQPConnectionError(111, ...)``, and aiormq
also logs ``error when creating transport`` at ERROR level, which Python prints on stderr
when the application configured no logging. :func:`opening` turns each into a
:class:`~kiwipy.ConnectFailed` (or :class:`~kiwipy.AccessRefused`) whose message says what is
wrong, and drops that log line while it does.

Invariants: a message never contains the URL's password; an error that is not about
connecting (a bug, a cancellation) passes through unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import ssl
from collections.abc import Awaitable, Mapping, Sequence
from typing import Optional, TypeVar

from aiormq import exceptions as amqp_errors
from pamqp import commands as spec
from pamqp import exceptions as pamqp_errors
from yarl import URL

from ... import exceptions
from .._options import ConnectionParams, endpoint_urls
from ._access import SEE_PERMISSIONS, LoginRefused, TlsFailure, tls_hint
from ._endpoints import EndpointsUnreachable

__all__ = ("connect_error", "opening", "target_url")

T = TypeVar("T")

#: What a failed connection attempt raises (through aiormq, pamqp and asyncio).
CONNECT_ERRORS = (
    amqp_errors.AMQPError,
    pamqp_errors.PAMQPException,
    OSError,
    EOFError,
    asyncio.TimeoutError,
)

#: The broker refused the login.
_LOGIN_REFUSED = (amqp_errors.ProbableAuthenticationError, amqp_errors.AuthenticationError)

#: RabbitMQ's ports, named in the hint.
_HINT_PORTS = "RabbitMQ's port is 5672 for amqp:// and 5671 for amqps://"


class _Attempt:
    """Whether a connection attempt of ours is in progress. Tasks aiormq starts during the
    attempt share this object through the context, so they see it end too."""

    active = True


_ATTEMPT: contextvars.ContextVar[Optional[_Attempt]] = contextvars.ContextVar(
    "kiwipy_connect_attempt", default=None
)


class _DropTransportError(logging.Filter):
    """Drops aiormq's ``error when creating transport`` record during our attempts: the
    same failure is raised to the caller as a :class:`~kiwipy.ConnectFailed`, and the record
    would reach stderr through :data:`logging.lastResort` as a stray line."""

    def filter(self, record: logging.LogRecord) -> bool:
        attempt = _ATTEMPT.get()
        if attempt is None or not attempt.active:
            return True
        return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_DropTransportError())


async def opening(params: ConnectionParams, attempt: Awaitable[T]) -> T:
    """:returns: what *attempt* (opening a connection described by *params*) gives.

    :raises ConnectFailed: (or :class:`~kiwipy.AccessRefused`) if the connection could not
        be opened; the aiormq error is its ``__cause__``.
    """
    current = _Attempt()
    token = _ATTEMPT.set(current)
    try:
        return await attempt
    except exceptions.KiwiError:
        raise  # said in words already
    except CONNECT_ERRORS as exc:
        urls = endpoint_urls(params)
        if len(urls) > 1:
            raise connect_error(exc, URL(urls[0]), shown=",".join(urls)) from exc
        raise connect_error(exc, target_url(params)) from exc
    finally:
        current.active = False
        _ATTEMPT.reset(token)


def target_url(params: ConnectionParams) -> URL:
    """:returns: the URL *params* (a URL, or aio-pika ``connect`` keyword arguments) connect
    to, with aio-pika's defaults filled in."""
    if params is None or isinstance(params, str):
        return URL(params or "amqp://guest:guest@localhost/")
    if isinstance(params, Sequence):
        return URL(endpoint_urls(params)[0])
    if not isinstance(params, Mapping):
        return URL(str(params))
    if params.get("url"):
        urls = endpoint_urls(params)
        return URL(urls[0] if urls else str(params["url"]))
    vhost = str(params.get("virtualhost", "/"))
    return URL.build(
        scheme="amqps" if params.get("ssl") else "amqp",
        user=str(params.get("login", "guest")),
        password=str(params.get("password", "guest")),
        host=str(params.get("host", "localhost")),
        port=int(params.get("port", 5671 if params.get("ssl") else 5672)),
        path="/" + vhost.lstrip("/") if vhost != "/" else "/",
    )


def connect_error(
    exc: BaseException, url: URL, shown: Optional[str] = None
) -> exceptions.ConnectFailed:
    """:returns: the kiwipy error saying why connecting to *url* failed with *exc*.

    :param shown: what to call the target instead of *url* (several endpoints).
    """
    masked = str(url.with_password("***")) if url.password else str(url)
    if shown is not None:
        masked = shown.replace(f":{url.password}@", ":***@") if url.password else shown
    reason = _reason(exc, url)
    message = f"cannot connect to {masked}: {reason}"
    user, vhost = url.user or "guest", url.path[1:] or "/"
    if isinstance(exc, _LOGIN_REFUSED):  # also aiormq's error, as kiwipy 0.9 let it through
        return LoginRefused(message, url=masked, user=user, vhost=vhost)
    if _close_frame(exc) is not None:
        return exceptions.AccessRefused(message, url=masked, user=user, vhost=vhost)
    if _tls_error(exc) is not None:
        return TlsFailure(message, url=masked)
    return exceptions.ConnectFailed(message, url=masked)


def _tls_error(exc: BaseException) -> Optional[ssl.SSLError]:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return next((e for e in (exc, cause, exc.__context__) if isinstance(e, ssl.SSLError)), None)


def _close_frame(exc: BaseException) -> Optional[spec.Connection.Close]:
    """:returns: the broker's ``connection.close`` that ended the handshake, if it did."""
    if isinstance(exc, amqp_errors.ConnectionClosed) and len(exc.args) >= 2:
        return spec.Connection.Close(reply_code=exc.args[0], reply_text=str(exc.args[1]))
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, spec.Connection.Close):
            return arg
    return None


def _reason(exc: BaseException, url: URL) -> str:
    """:returns: what went wrong, for a person who can fix it."""
    if isinstance(exc, EndpointsUnreachable):
        each = (
            f"{tried.host}:{tried.port}: {_reason(error, tried)}" for tried, error in exc.failures
        )
        return "no endpoint could be reached (" + "; ".join(each) + ")"
    address = f"{url.host}:{url.port}"
    close = _close_frame(exc)
    if isinstance(exc, _LOGIN_REFUSED):
        return (
            f"access refused for user {url.user or 'guest'!r}: the broker refused the login "
            f"(wrong user name or password, or the user may not log in from this host: "
            f"{_first_arg(exc, url)})"
        )
    if close is not None:
        return _refusal(close, url)
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer from {address} in time (a firewall dropping packets?)"
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, socket.gaierror):
        return f"host name {url.host!r} not found ({cause.strerror or _first_arg(cause, url)})"
    if isinstance(cause, ConnectionRefusedError):
        return f"nothing listening on {address}"
    tls = _tls_error(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return (
            f"TLS handshake with {address} failed: the broker's TLS certificate was not "
            f"accepted ({tls}); {tls_hint(str(tls))}"
        )
    if tls is not None:
        return (
            f"TLS handshake with {address} failed ({tls}): the port does not speak TLS, or "
            f"{tls_hint(str(tls))}"
        )
    if _not_amqp(exc, cause):
        return f"{address} does not speak AMQP ({_HINT_PORTS})"
    if isinstance(cause, OSError) and cause.strerror:
        return f"{address}: {cause.strerror}"
    return f"{type(exc).__name__}: {_first_arg(exc, url)}"


def _refusal(close: spec.Connection.Close, url: URL) -> str:
    """:returns: why the broker closed the handshake (its reply text names no password)."""
    vhost = url.path[1:] or "/"
    text = close.reply_text or ""
    if "not found" in text and "vhost" in text:
        return (
            f"virtual host {vhost!r} not found (the URL's path names the virtual host; "
            f"write '/' as %2f) [{close.reply_code} {text}]"
        )
    if close.reply_code in (403, 530):
        user = url.user or "guest"
        return (
            f"access to virtual host {vhost!r} refused for user {user!r}: it may not use vhost "
            f"'{vhost}' without permissions there {SEE_PERMISSIONS} [{close.reply_code} {text}]"
        )
    return f"the broker closed the connection [{close.reply_code} {text}]"


def _not_amqp(exc: BaseException, cause: BaseException) -> bool:
    """Whether the other end answered, but not in AMQP (it closed the connection, or sent
    something else than AMQP frames)."""
    garbled = (
        amqp_errors.IncompatibleProtocolError,
        amqp_errors.ProtocolSyntaxError,
        pamqp_errors.AMQPFrameError,
        pamqp_errors.AMQPSyntaxError,
        pamqp_errors.UnmarshalingException,
        asyncio.IncompleteReadError,
        EOFError,
        ConnectionResetError,
    )
    if isinstance(exc, garbled) or isinstance(cause, garbled):
        return True
    # pamqp parsed a frame, but not the one the handshake expects
    return isinstance(exc, pamqp_errors.AMQPInternalError)


def _first_arg(exc: BaseException, url: URL) -> str:
    """:returns: the text of *exc* (a library's words, which may quote the URL) with *url*'s
    password masked. Only such outside text is masked: masking the whole message would
    also hide a user name or a word that happens to equal the password (``guest:guest``)."""
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.replace(url.password, "***") if url.password else text
