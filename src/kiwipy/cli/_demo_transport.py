"""Where ``kiwipy demo`` runs (:func:`choose_transport`): a new SQLite file in a temporary
folder (the default), a given SQLite file, RabbitMQ with names unique to the run, or the
in-process transport; connecting to it, and removing the run's RabbitMQ names at the end."""

from __future__ import annotations

import os
import secrets
import tempfile
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .. import exceptions
from ..communications import Communicator, connect
from ._common import EXIT_USAGE, CliError, check_url, describe, mask_url

__all__ = ("DEFAULT_URL", "Transport", "choose_transport", "connect_demo", "delete_names")

#: The demo's default ``--url``: a new SQLite file in a temporary folder.
DEFAULT_URL = "sqlite://"


@dataclass
class Transport:
    """Where the demo runs."""

    url: str
    #: The connect options besides the encoder (JSON data: the worker processes get them).
    options: dict[str, Any]
    where: str
    #: Workers on threads of the demo (memory://) rather than processes of their own.
    in_process: bool = False
    #: The temporary folder to remove at the end.
    folder: str | None = None
    #: RabbitMQ names to delete at the end.
    rabbitmq: bool = False
    #: The SQLite file given with --url, kept at the end.
    kept: str | None = None


def choose_transport(url: str) -> Transport:
    """:returns: the transport *url* asks for; a temporary folder is created for the default.

    :raises CliError: (usage) for a bad URL.
    """
    tag = secrets.token_hex(4)
    prefix = f"kiwipy-demo-{tag}"
    if url == DEFAULT_URL:
        folder = tempfile.mkdtemp(prefix="kiwipy-demo-")
        path = os.path.join(folder, "demo.db")
        return Transport(
            url="sqlite:///" + urllib.parse.quote(path),
            options=_sqlite_options(prefix),
            where=f"a SQLite file in a temporary folder, {path} (no broker)",
            folder=folder,
        )
    if url.startswith("sqlite://"):
        from ..sqlite._url import parse_url

        try:
            path = str(parse_url(url)[0])
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None  # it names the URL
        where = f"the SQLite file {path} (kept afterwards; no broker)"
        return Transport(url=url, options=_sqlite_options(prefix), where=where, kept=path)
    if not url.startswith(("amqp://", "amqps://", "memory://")):
        raise CliError(
            f"bad URL {mask_url(url)!r}: it must start with amqp://, amqps://, sqlite:// or "
            "memory://",
            EXIT_USAGE,
        )
    check_url(url)
    if url.startswith("memory://"):
        url = url if url != "memory://" else f"memory://demo-{tag}"
        where = f"the in-process transport ({url})"
        return Transport(url=url, options={}, where=where, in_process=True)
    options = {
        "message_exchange": f"{prefix}.messages",
        "task_exchange": f"{prefix}.tasks",
        "task_queue": f"{prefix}.tasks",
        "task_prefetch_count": 1,
        "testing_mode": True,  # auto-deleting exchanges, expiring queues: a demo leaves nothing
    }
    where = f"RabbitMQ at {mask_url(url)} (names {prefix}.*)"
    return Transport(url=url, options=options, where=where, rabbitmq=True)


def _sqlite_options(prefix: str) -> dict[str, Any]:
    # A queue of the run's own (a kept file may hold an earlier run's tasks); one task at a
    # time per worker, so that the tasks spread over the workers.
    return {"task_queue": f"{prefix}.tasks", "task_prefetch_count": 1}


def connect_demo(url: str, options: dict[str, Any]) -> Communicator:
    """:raises CliError: saying why *url* cannot be reached."""
    try:
        return connect(url, **options)
    except ImportError as exc:
        raise CliError(
            f"the {url.split(':', 1)[0]}:// transport is not available ({describe(exc)}); "
            "install it with: pip install 'kiwipy[rmq]'"
        ) from None
    except exceptions.ConnectFailed as exc:  # its message names the URL
        raise CliError(str(exc)) from None
    except Exception as exc:
        raise CliError(f"cannot connect to {mask_url(url)}: {describe(exc)}") from None


async def delete_names(url: str, options: dict[str, Any]) -> None:
    """Remove the run's RabbitMQ exchanges and queues (best effort)."""
    try:
        import aio_pika

        connection = await aio_pika.connect(url, timeout=3.0)
    except Exception:  # nothing to clean up if we cannot get there
        return
    try:
        channel = await connection.channel()
        queue = options["task_queue"]
        for name in (queue, f"{queue}.dead"):
            await channel.queue_delete(name)
        for name in (options["message_exchange"], options["task_exchange"]):
            await channel.exchange_delete(name)
    except Exception:  # best effort: the names are unique, leftovers harm nobody
        pass
    finally:
        await connection.close()
