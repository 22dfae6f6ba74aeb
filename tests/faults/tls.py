"""A throw-away certificate authority for TLS tests, made with the ``openssl`` command.

:func:`make_certificates` writes, in a directory of the test's: a CA, a server certificate
for the host name ``localhost`` only (so connecting to ``127.0.0.1`` fails the host-name
check), and a client certificate whose common name is the RabbitMQ user it logs in as with
EXTERNAL authentication. The keys are unencrypted and readable by their user only.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple, Optional

__all__ = ("CLIENT_USER", "Certificates", "find_openssl", "make_certificates")

#: The common name of the client certificate: the user EXTERNAL logs in as.
CLIENT_USER = "kiwitest-client"


class Certificates(NamedTuple):
    """Paths of the PEM files :func:`make_certificates` wrote."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def find_openssl() -> Optional[str]:
    return shutil.which("openssl")


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)


def _signed(directory: Path, name: str, subject: str, extensions: str) -> None:
    _openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", subject)  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey",
             "ca.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
             "-extfile", f"{name}.ext")  # fmt: skip
    (directory / f"{name}.key").chmod(0o600)


def make_certificates(directory: Path) -> Certificates:
    """Write a CA and server and client certificates signed by it into *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "2", "-subj", "/CN=kiwitest CA")  # fmt: skip
    server = "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
    _signed(directory, "server", "/CN=localhost", server + "extendedKeyUsage=serverAuth\n")
    client = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
    _signed(directory, "client", f"/CN={CLIENT_USER}", client)
    return Certificates(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )
