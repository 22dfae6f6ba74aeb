"""One lock file per live process (:class:`LockFile`, :func:`is_held`). Its ``flock`` lock
lasts exactly as long as the process (the kernel drops it when the process dies, even by
``SIGKILL``), so any process can tell whether the owner of a lock file is still alive.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pathlib
import secrets
import weakref
from typing import Optional

__all__ = ("LockFile", "is_held")


# The LockFiles of this process not yet released, for the fork handler below.
_live: weakref.WeakSet[LockFile] = weakref.WeakSet()


class LockFile:
    """A lock file that stays locked (``flock``, exclusive) for as long as this process
    holds it, and no longer: when the process exits or is killed the kernel drops the lock,
    so :func:`is_held` tells other processes that its owner is gone.

    The file is created with its lock already taken: it is locked under a temporary name
    and then linked to its own, so no process ever finds it unlocked while its owner lives.

    A child made by :func:`os.fork` closes the descriptors of the lock files it inherits
    (they would keep the parent's locks alive after the parent died); its
    :meth:`release` does nothing. Processes started by :mod:`subprocess` never inherit them
    (close-on-exec). A lock file garbage collected unreleased is released.
    """

    def __init__(self, path: pathlib.Path, fd: int) -> None:
        """Use :meth:`create`."""
        self._path = path
        self._fd: Optional[int] = fd
        _live.add(self)

    @classmethod
    def create(cls, directory: pathlib.Path, name: str) -> LockFile:
        """Create ``<directory>/<name>.lock`` (mode 0600) and lock it.

        :raises ValueError: if *name* is empty or has a ``/`` or a NUL.
        :raises FileExistsError: if that lock file exists already.
        """
        if not name or "/" in name or "\x00" in name or name in (".", ".."):
            raise ValueError(f"invalid lock file name {name!r}")
        path = pathlib.Path(directory) / f"{name}.lock"
        staging = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else has it
            try:
                os.link(staging, path)
            except FileExistsError:
                raise FileExistsError(
                    errno.EEXIST, f"the lock file {path} exists already", str(path)
                ) from None
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(staging)
        return cls(path, fd)

    @property
    def path(self) -> pathlib.Path:
        """The lock file."""
        return self._path

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called (or this is a forked child's copy)."""
        return self._fd is None

    def release(self) -> None:
        """Remove the lock file and drop the lock. Calling it again does nothing."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _live.discard(self)
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)

    def _forget_in_child(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> LockFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # at interpreter shutdown os may be half torn down
            pass

    def __repr__(self) -> str:
        state = "released" if self._fd is None else "held"
        return f"<LockFile {str(self._path)!r} {state}>"


def _after_fork_in_child() -> None:
    for lock in list(_live):
        lock._forget_in_child()
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def is_held(path: pathlib.Path) -> bool:
    """Whether the lock file *path* is locked, i.e. its owner process is alive.

    ``False`` when the file does not exist, or exists unlocked (its owner died without
    releasing it; the file is left for the caller to clean up). The check takes the lock for
    an instant, so two checkers may see each other's check as a live owner.

    ``flock`` locks belong to an open file description, not to a process: a check from the
    process holding the lock (through a separate open) also answers ``True`` while held.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
