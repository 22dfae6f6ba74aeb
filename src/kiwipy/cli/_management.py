"""Listing a vhost's queues through the RabbitMQ management HTTP API (``kiwipy inspect``).

AMQP itself cannot list queues: a client can only ask about a queue it names. The
management plugin's HTTP API (``rabbitmq-plugins enable rabbitmq_management``, port 15672
by default) can; :func:`list_queues` uses it with the AMQP URL's user and password, and says
why when it cannot (plugin not enabled, user refused), so the caller can fall back to the
queues it knows by name. It only reads (``GET``), with a short timeout.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

__all__ = (
    "DEFAULT_PORT",
    "ManagementUnavailable",
    "count_connections",
    "list_queues",
    "management_url",
)

#: The management plugin's default HTTP port.
DEFAULT_PORT = 15672
_TIMEOUT = 3.0
_COLUMNS = (
    "name,messages_ready,messages_unacknowledged,consumers,type,"
    "message_stats.publish,message_stats.deliver_get"
)


class ManagementUnavailable(Exception):
    """The management API cannot list the queues; the text says why, for a person."""


def management_url(amqp_url: str) -> str:
    """:returns: the management API's base URL for the broker of *amqp_url*:
    ``http://<host>:15672/`` (``https`` for ``amqps``)."""
    parts = urllib.parse.urlsplit(amqp_url)
    scheme = "https" if parts.scheme == "amqps" else "http"
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"{scheme}://{host}:{DEFAULT_PORT}/"


def list_queues(amqp_url: str, base: Optional[str] = None) -> list[dict[str, Any]]:
    """:returns: every queue of the AMQP URL's vhost: ``name``, ``messages`` (ready),
    ``unacked``, ``consumers`` and ``type``, sorted by name.

    :param base: the management API's base URL (default: :func:`management_url`).
    :raises ManagementUnavailable: saying why the API could not answer.
    """
    parts = urllib.parse.urlsplit(amqp_url)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    path = f"api/queues/{urllib.parse.quote(vhost, safe='')}?columns={_COLUMNS}"
    rows = _get_path(amqp_url, base, path)
    return sorted((_row(row) for row in rows if isinstance(row, dict)), key=lambda q: q["name"])


def count_connections(amqp_url: str, base: Optional[str] = None) -> int:
    """:returns: how many client connections the broker has (every vhost the user sees).

    :raises ManagementUnavailable: saying why the API could not answer.
    """
    return len(_get_path(amqp_url, base, "api/connections?columns=name"))


def _get_path(amqp_url: str, base: Optional[str], path: str) -> list[Any]:
    parts = urllib.parse.urlsplit(amqp_url)
    base = base or management_url(amqp_url)
    user = urllib.parse.unquote(parts.username or "guest")
    password = urllib.parse.unquote(parts.password or "guest")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    url = urllib.parse.urljoin(base, path)
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    return _get(request, base, user)


def _get(request: urllib.request.Request, base: str, user: str) -> list[Any]:
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            data = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            why = f"it refused user {user!r} (HTTP {exc.code}; the user needs a management tag)"
        else:
            why = f"it answered HTTP {exc.code}"
        message = f"the management API at {base} cannot list queues: {why}"
        raise ManagementUnavailable(message) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ManagementUnavailable(
            f"the management API is not reachable at {base} ({reason}): the broker's "
            "management plugin is probably not enabled (rabbitmq-plugins enable "
            "rabbitmq_management)"
        ) from None
    if not isinstance(data, list):
        raise ManagementUnavailable(f"the management API at {base} gave no queue list")
    return data


def _row(row: dict[str, Any]) -> dict[str, Any]:
    stats = row.get("message_stats")
    stats = stats if isinstance(stats, dict) else {}
    return {
        "name": row.get("name"),
        "exists": True,
        "messages": row.get("messages_ready"),
        "unacked": row.get("messages_unacknowledged"),
        "consumers": row.get("consumers"),
        "type": row.get("type"),
        "published": stats.get("publish", 0),  # ever, for kiwipy inspect --watch's rates
        "delivered": stats.get("deliver_get", 0),
    }
