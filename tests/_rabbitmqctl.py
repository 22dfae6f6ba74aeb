"""A throw-away vhost and user on a RabbitMQ node, made and removed with ``rabbitmqctl``.

Names are unique per instance (``kiwitest-<hex>``), so concurrent test runs never share
them; both are deleted on exit, whatever happened.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from types import TracebackType
from typing import Optional
from urllib.parse import quote

from typing_extensions import Self

__all__ = ("BrokerAccount", "find_rabbitmqctl")


def find_rabbitmqctl() -> Optional[str]:
    """:returns: the ``rabbitmqctl`` command, or ``None`` where RabbitMQ is not installed."""
    return shutil.which("rabbitmqctl") or shutil.which("rabbitmqctl", path="/usr/sbin")


class BrokerAccount:
    """A vhost and a user with a random password, permitted by regular expressions.

    :param command: ``rabbitmqctl`` and the arguments that select the node.
    :param env: the environment to run it in (``None``: this process's).
    """

    def __init__(self, command: list[str], env: Optional[dict[str, str]] = None) -> None:
        tag = secrets.token_hex(5)
        self.vhost = f"kiwitest-{tag}"
        self.user = f"kiwitest-{tag}"
        self.password = f"CANARY-{secrets.token_hex(8)}"
        self._command = command
        self._env = env

    def ctl(self, *args: str) -> str:
        """Run ``rabbitmqctl *args``; :returns: its output. :raises CalledProcessError:"""
        done = subprocess.run(
            [*self._command, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
            env=self._env,
        )
        return done.stdout

    def url(self, host: str = "127.0.0.1", port: int = 5672, scheme: str = "amqp") -> str:
        """:returns: the URL that logs in as this user into this vhost."""
        vhost = quote(self.vhost, safe="")
        return f"{scheme}://{self.user}:{self.password}@{host}:{port}/{vhost}"

    def permit(self, configure: str, write: str, read: str) -> None:
        """Set the user's permissions in the vhost to these regular expressions."""
        self.ctl("set_permissions", "-p", self.vhost, self.user, configure, write, read)

    def __enter__(self) -> Self:
        self.ctl("add_vhost", self.vhost)
        try:
            self.ctl("add_user", self.user, self.password)
        except BaseException:
            self.ctl("delete_vhost", self.vhost)
            raise
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        for args in (("delete_user", self.user), ("delete_vhost", self.vhost)):
            try:
                self.ctl(*args)
            except subprocess.CalledProcessError:
                pass  # already gone; nothing of ours is left


def system_command() -> list[str]:
    """:returns: the ``rabbitmqctl`` command of the node this machine runs (or ``[]``)."""
    found = find_rabbitmqctl()
    return [found] if found else []
