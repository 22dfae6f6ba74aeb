"""The broker's refusals (``ACCESS_REFUSED``, ``NOT_ALLOWED``) as :class:`~kiwipy.AccessRefused`.

RabbitMQ checks three permissions per user and vhost, each a regular expression over the
names of exchanges and queues: *configure* (declare, delete), *write* (publish to an exchange,
bind a queue) and *read* (consume or get from a queue, bind from an exchange). Its refusal
names the resource and the user, but not the permission that was missing; :func:`refusal`
works it out from the AMQP method (:data:`NEEDS`), so the error says what to grant.

A refusal that is not about permissions (``ACCESS_REFUSED - queue 'q' ... in exclusive use``:
an exclusive queue held by another connection, which RPC identifiers and lease claims rely
on) is left alone for the caller to interpret.
"""

from __future__ import annotations

import re
from typing import Optional

from aiormq import exceptions as amqp_errors

from ... import exceptions

__all__ = ("NEEDS", "SEE_PERMISSIONS", "LoginRefused", "TlsFailure", "refusal", "tls_hint")

#: The permission each AMQP method needs, per kind of resource it touches.
NEEDS: dict[str, dict[str, str]] = {
    "exchange_declare": {"exchange": "configure"},
    "exchange_delete": {"exchange": "configure"},
    # A queue that dead-letters (every new task queue) also needs read on itself and write
    # on its dead-letter exchange (the default exchange, ``amq.default``).
    "queue_declare": {"queue": "configure or read", "exchange": "write"},
    "queue_delete": {"queue": "configure"},
    "queue_bind": {"queue": "write", "exchange": "read"},
    "queue_unbind": {"queue": "write", "exchange": "read"},
    "basic_publish": {"exchange": "write"},
    "basic_consume": {"queue": "read"},
    "basic_get": {"queue": "read"},
    "queue_purge": {"queue": "read"},
}
# When the method is not known: what the description of the operation says it was.
_BY_WORD = (
    ("publish", {"exchange": "write"}),
    ("send", {"exchange": "write"}),
    ("consum", {"queue": "read"}),
    ("getting", {"queue": "read"}),
    ("bind", NEEDS["queue_bind"]),
    ("declar", {"exchange": "configure", "queue": "configure"}),
    ("delet", {"exchange": "configure", "queue": "configure"}),
)
_ACCESS = re.compile(r"access to (\w+) '(.*)' in vhost '(.*)' refused for user '(.*)'")
SEE_PERMISSIONS = "(rabbitmqctl set_permissions; see 'Permissions' in kiwipy's security docs)"


class LoginRefused(exceptions.AccessRefused, amqp_errors.ProbableAuthenticationError):
    """The broker refused the login. Also the aiormq error kiwipy 0.9 let through, so code
    written for 0.9 that caught it still does (raised by :mod:`kiwipy.rmq.connection._connecting`)."""


class TlsFailure(exceptions.TlsError, amqp_errors.AMQPConnectionError):
    """The TLS handshake failed. Also the aiormq error kiwipy 0.9 let through (raised by
    :mod:`kiwipy.rmq.connection._connecting`)."""


_TLS_HINTS = (
    ("mismatch", "connect with a host name the broker's certificate is valid for"),
    ("not valid for", "connect with a host name the broker's certificate is valid for"),
    ("CERTIFICATE_VERIFY_FAILED", "give the CA that signed the broker's certificate with "
     "the URL parameter cafile=/path/to/ca.pem"),
    ("", "check the URL's cafile, certfile and keyfile, and the broker's ssl_options"),
)  # fmt: skip


def tls_hint(reason: str) -> str:
    """:returns: what to do about the failed TLS handshake *reason* (the ``ssl`` error)."""
    return next(hint for key, hint in _TLS_HINTS if key in reason)


def _permission(kind: str, what: str, method: Optional[str]) -> str:
    if method in NEEDS:
        return NEEDS[method].get(kind, "configure, write or read")
    lowered = what.lower()
    for word, needs in _BY_WORD:
        if word in lowered and kind in needs:
            return needs[kind]
    return "configure, write or read"


def refusal(
    exc: BaseException, what: str, method: Optional[str] = None
) -> Optional[exceptions.AccessRefused]:
    """:returns: the :class:`~kiwipy.AccessRefused` for *exc*, raised while doing *what*
    (with the aiormq channel *method*, when known), or ``None`` if *exc* is no permission
    refusal."""
    if not isinstance(exc, amqp_errors.ChannelAccessRefused):
        return None
    match = _ACCESS.search(str(exc))
    if match is None:
        return None
    kind, name, vhost, user = match.groups()
    permission = _permission(kind, what, method)
    resource = f"{kind} '{name}'"
    return exceptions.AccessRefused(
        f"access refused {what}: user '{user}' lacks the {permission} permission on "
        f"{resource} in vhost '{vhost}' {SEE_PERMISSIONS}",
        permission=permission,
        resource=resource,
        vhost=vhost,
        user=user,
    )
