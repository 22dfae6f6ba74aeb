"""Every error kiwipy raises.

All of kiwipy's own exceptions derive from :class:`KiwiError`, so ``except kiwipy.KiwiError``
catches anything this library raises on purpose. The names of kiwipy 0.9 are kept. The one
exception to the tree is :data:`TimeoutError`: as in kiwipy 0.9 it *is*
:class:`concurrent.futures.TimeoutError` (the builtin :class:`TimeoutError` on Python 3.11+),
because callers catch it from ``Future.result(timeout)`` as well as from kiwipy calls.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import sys
from typing import Any

__all__ = (
    "AccessRefused",
    "BatchSendError",
    "CommunicatorClosed",
    "ConnectFailed",
    "ConnectionLost",
    "DeadlineExceeded",
    "DecodeBudgetExceeded",
    "DecodeError",
    "DeliveryFailed",
    "DuplicateSubscriberIdentifier",
    "EncodeError",
    "EncodingError",
    "InvalidName",
    "InvalidStateError",
    "KiwiError",
    "MessageTooLarge",
    "NetworkFilesystemError",
    "PublishNacked",
    "QueueEmpty",
    "RemoteException",
    "ReplyLost",
    "StorageError",
    "TaskRejected",
    "TimeoutError",
    "TlsError",
    "UnroutableError",
)

TimeoutError = concurrent.futures.TimeoutError  # upstream name, kept on purpose


class KiwiError(Exception):
    """Root of every exception kiwipy raises on purpose."""


# Outcomes reported by the other side


class RemoteException(KiwiError):
    """The subscriber on the other side raised; ``args[0]`` is its message.

    :ivar remote_type: the qualified name of the remote exception's class, when the sender
        reported it (this library does; kiwipy 0.9 does not), else ``None``.
    :ivar remote_traceback: the remote traceback as text, when reported, else ``None``.
    """

    def __init__(
        self,
        *args: Any,
        remote_type: str | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(*args)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class TaskRejected(KiwiError):
    """Raised by a task subscriber to pass the task on to another subscriber or worker."""


# Delivery errors


class DeliveryFailed(KiwiError):
    """A message could not be delivered; the base of the more specific delivery errors."""


class UnroutableError(DeliveryFailed):
    """Nobody can receive the message: no queue is bound for it (unknown RPC recipient,
    task queue that does not exist)."""


class PublishNacked(DeliveryFailed):
    """The broker refused to take responsibility for a message (``basic.nack``)."""


class ConnectionLost(DeliveryFailed):
    """The connection was lost and not restored in time, so the operation's outcome is not
    known to have happened (a send was not confirmed, a reply cannot arrive)."""


class ReplyLost(DeliveryFailed):
    """The reply to a request can never arrive: its responder or the reply queue is gone."""


class BatchSendError(DeliveryFailed):
    """Some messages of a batch send (``task_send_many``, ``rpc_send_many``, ...) failed.

    Raised by ``task_send_many``, ``rpc_send_many`` and ``broadcast_send_many``. The
    messages not listed in ``errors`` were confirmed by the broker (their reply futures are
    in ``futures``); those listed were not (or, for an RPC, nobody holds its recipient:
    :class:`UnroutableError`), or were not sent because an earlier window of the batch
    failed. Sending them again may duplicate the ones the broker did take before the
    failure was reported.

    :ivar futures: one entry per message, as the batch send would have returned: the reply
        future of each confirmed message (``None`` with ``no_reply``, for a broadcast, or
        when it failed). A message written whose confirm did not come in time (its error is
        a :data:`TimeoutError`) may have gone out: its reply future is kept, and fails if
        the broker refuses the message after all.
    :ivar errors: index of each message that failed -> why (the first one is also the
        ``__cause__``).
    """

    def __init__(self, futures: list[Any], errors: dict[int, BaseException]) -> None:
        first = min(errors) if errors else -1
        reason = f"; the first (message {first}): {errors[first]!r}" if errors else ""
        super().__init__(f"{len(errors)} of {len(futures)} messages of the batch failed{reason}")
        self.futures = futures
        self.errors = errors


class StorageError(DeliveryFailed):
    """The file of an embedded transport (``sqlite://``) could not be read or written: the
    disk is full, the file is locked for longer than ``busy_timeout``, or it is not a
    database. A send that raises it stored nothing.

    :ivar path: the file.
    :ivar doing: what was being done.
    :ivar cause: SQLite's error.
    """

    def __init__(self, path: str, doing: str, cause: BaseException) -> None:
        hint = ""
        text = str(cause)
        if "locked" in text or "busy" in text:
            hint = " (other processes held its write lock for longer than busy_timeout)"
        elif "full" in text:
            hint = " (free some space on its disk)"
        super().__init__(f"could not {doing} in {path}: {text}{hint}")
        self.path = path
        self.doing = doing
        self.cause = cause


# Connecting


class ConnectFailed(KiwiError, ConnectionError):
    """A connection to the broker could not be opened (``kiwipy.connect``,
    :func:`kiwipy.rmq.async_connect`): nothing listens at the address, the host name is not
    known, the port does not speak AMQP (or TLS, for ``amqps://``), or no answer came in time.
    The message says which, and names the URL with its password masked.

    It is also a :class:`ConnectionError`, as the aiormq errors it replaces were.

    :ivar url: the broker's URL, its password replaced by ``***``.
    """

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url

    def __str__(self) -> str:
        return str(self.args[0])


class AccessRefused(ConnectFailed, PermissionError):
    """The broker refused: the login (wrong user name or password, a user not allowed to log
    in from this host, a virtual host that does not exist or where the user has no
    permissions), or an operation for lack of a permission (AMQP ``ACCESS_REFUSED``).

    For an operation, the message names it, the resource, the user and the permission needed
    (``configure``, ``write`` or ``read``). Never the password.

    :ivar permission: ``'configure'``, ``'write'``, ``'read'`` (``None`` for a login).
    :ivar resource: ``"exchange 'name'"`` or ``"queue 'name'"`` (``None`` for a login).
    :ivar vhost: the virtual host, when known.
    :ivar user: the user name, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        permission: str | None = None,
        resource: str | None = None,
        vhost: str | None = None,
        user: str | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.permission = permission
        self.resource = resource
        self.vhost = vhost
        self.user = user


class TlsError(ConnectFailed):
    """The TLS handshake with the broker failed: its certificate is not signed by a trusted
    CA (give the CA with the URL's ``cafile``), it is not valid for the host name of the URL,
    the broker refused the client certificate, or the port does not speak TLS. Raised at once:
    trying again cannot help.
    """


# Subscribers and lifecycle


class DuplicateSubscriberIdentifier(KiwiError):
    """A subscriber with this identifier is already registered (here, or for RPC
    identifiers on this library's RabbitMQ transport, anywhere on the broker)."""


class CommunicatorClosed(KiwiError):
    """The communicator was closed; no further operation is possible."""


class InvalidName(KiwiError, ValueError):
    """An RPC identifier or a task queue name breaks the naming rules every transport
    shares (see ``docs/guarantees.md``: too long for AMQP's 255-byte short strings, empty,
    an AMQP topic wildcard, ...). Raised by the call that was given it, before anything is
    sent or registered, so the communicator is untouched.

    :ivar field: what the name is for (``'RPC identifier'``, ``'task queue name'``, ...).
    :ivar value: the name as given.
    :ivar reason: which rule it breaks.
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        shown = repr(value) if len(repr(value)) <= 60 else f"{repr(value)[:57]}..."
        super().__init__(f"invalid {field} {shown}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


class InvalidStateError(KiwiError, asyncio.InvalidStateError):
    """An operation is not allowed in the current state: a pull-mode task processed twice,
    requeued once finished, ... (kept from kiwipy 0.9). It is also the
    :class:`asyncio.InvalidStateError` kiwipy 0.9's tasks raised, on every transport."""


class QueueEmpty(KiwiError):
    """``next_task`` found no task in the queue."""


class NetworkFilesystemError(KiwiError, OSError):
    """The file of a ``sqlite://`` communicator is on a network or cluster filesystem (NFS,
    SMB, Lustre, GPFS, CephFS, sshfs, ...), where SQLite's WAL mode cannot work. Raised when
    connecting, before the file is created. It is also an :class:`OSError`.

    :ivar path: the database file.
    :ivar fstype: the filesystem's type, as the mount table names it (``'nfs4'``, ...).
    """

    def __init__(self, path: str, fstype: str) -> None:
        super().__init__(
            f"{path} is on a {fstype} filesystem: SQLite's WAL needs shared memory and POSIX "
            "locks that network filesystems do not provide; put the file on a local disk, "
            "e.g. /tmp or $TMPDIR, or use RabbitMQ (KIWIPY_SQLITE_ALLOW_NETWORK_FS=1 skips "
            "this check, at your own risk)"
        )
        self.path = path
        self.fstype = fstype

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.fstype))


_DEADLINE_DOC = """No reply came within the ``timeout`` given to ``rpc_send`` or ``task_send``:
    the request's future fails with it. A request is never started after its deadline (see
    ``docs/concepts.md``, *Deadlines and cancellation*). It is a builtin
    :class:`TimeoutError` (and :data:`TimeoutError`, where the two differ)."""

# The builtin TimeoutError and concurrent.futures' are one class from Python 3.11 on; before,
# a deadline error is both, so ``except TimeoutError`` catches it whichever the user means.
if sys.version_info >= (3, 11):

    class DeadlineExceeded(KiwiError, builtins.TimeoutError):
        __doc__ = _DEADLINE_DOC

else:

    class DeadlineExceeded(KiwiError, builtins.TimeoutError, concurrent.futures.TimeoutError):
        __doc__ = _DEADLINE_DOC


# Encoding


class EncodingError(KiwiError):
    """Base of the errors raised while turning messages into bytes and back.

    :ivar encoder: the name of the encoder that failed (``'yaml'``, ``'json'``, ...).
    """

    def __init__(self, message: str, *, encoder: str) -> None:
        super().__init__(f"[{encoder}] {message}")
        self.encoder = encoder


class EncodeError(EncodingError, TypeError):
    """A message (or a result) cannot be encoded by the communicator's encoder."""


class DecodeError(EncodingError, ValueError):
    """Received bytes cannot be decoded by the communicator's decoder."""


class MessageTooLarge(KiwiError, ValueError):
    """An encoded message is larger than the communicator's configured limit.

    :ivar size: the encoded size in bytes; a lower bound of it when the message was refused
        before it was encoded (its strings and bytes alone are over the limit).
    :ivar limit: the configured limit in bytes.
    """

    def __init__(self, size: int, limit: int, *, at_least: bool = False) -> None:
        # at_least: *size* is a lower bound, found without encoding (the message was refused
        # before encoding it)
        measure = "at least " if at_least else ""
        super().__init__(
            f"encoded message is {measure}{size} bytes, over the limit of {limit} bytes"
        )
        self.size = size
        self.limit = limit


class DecodeBudgetExceeded(MessageTooLarge):
    """A received body is refused before decoding because decoding it could take more memory
    than the communicator's ``max_decode_memory``: its size times the encoder's worst-case
    :attr:`~kiwipy.encoders.Encoder.decode_factor`. A refused task is parked (reason
    ``too-large``) and its sender answered with this error.

    :ivar size: the body's size in bytes.
    :ivar limit: the largest body of this encoder accepted, in bytes.
    :ivar encoder: the encoder's name.
    :ivar budget: ``max_decode_memory``, in bytes.
    """

    def __init__(self, size: int, *, encoder: str, factor: int, budget: int) -> None:
        limit = budget // factor
        KiwiError.__init__(
            self,
            f"a {size}-byte {encoder} body may take up to {size * factor} bytes of memory to "
            f"decode, over max_decode_memory ({budget} bytes); {encoder} bodies of up to "
            f"{limit} bytes are accepted",
        )
        self.size = size
        self.limit = limit
        self.encoder = encoder
        self.budget = budget
