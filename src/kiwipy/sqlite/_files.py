"""File-system concerns of the ``sqlite://`` transport; nothing here talks to SQLite.

* :func:`parse_url`: a ``sqlite://`` URL -> the database's absolute path and its options.
* :func:`check_local_filesystem`: refuse a database on a network filesystem, where SQLite's
  WAL mode cannot work (:func:`filesystem_type` reads the mount table).
* :func:`create_private`, :func:`sidecar_dir`: the database file (mode 0600) and the
  directory next to it (mode 0700) that holds the per-process lock files.
* :class:`LockFile`, :func:`is_held`: one lock file per live process. Its ``flock`` lock
  lasts exactly as long as the process (the kernel drops it when the process dies, even by
  ``SIGKILL``), so any process can tell whether the owner of a lock file is still alive.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pathlib
import re
import secrets
import urllib.parse
import weakref
from typing import Optional

from ..exceptions import NetworkFilesystemError

__all__ = (
    "ALLOW_NETWORK_FS_ENV",
    "LockFile",
    "NETWORK_FILESYSTEMS",
    "check_local_filesystem",
    "create_private",
    "filesystem_type",
    "is_held",
    "parse_url",
    "sidecar_dir",
)

_SCHEME = "sqlite://"
_EXPECTED = (
    "expected sqlite:///relative/path.db (relative to the current directory) "
    "or sqlite:////absolute/path.db"
)


def _bad_url(url: str, reason: str) -> ValueError:
    return ValueError(f"invalid SQLite URL {url!r}: {reason}; {_EXPECTED}")


def parse_url(url: str) -> tuple[pathlib.Path, dict[str, str]]:
    """The database file and the query parameters of a ``sqlite://`` URL.

    SQLAlchemy's convention: ``sqlite:///relative/path.db`` is relative to the current
    directory (the path returned is made absolute, so it stays the same file if the
    directory changes later), ``sqlite:////absolute/path.db`` is absolute. The path is
    percent-decoded (``%20`` is a space, ``%3F`` a ``?``). Query parameters
    (``?synchronous=normal&x=y``) come back as a dict of strings.

    :raises ValueError: naming the URL and the expected forms, when the URL does not start
        with ``sqlite://``, has a host part (the file must be local), has no path, asks for
        ``:memory:`` (use ``memory://`` for a single process), names a directory, or repeats
        a query parameter.
    """
    if not url.startswith(_SCHEME):
        raise _bad_url(url, "it does not start with sqlite://")
    rest, _, query = url[len(_SCHEME) :].partition("?")
    if rest in (":memory:", "/:memory:"):
        raise _bad_url(
            url,
            "an in-memory SQLite database cannot be shared between processes; use memory:// "
            "for a single process",
        )
    if rest and not rest.startswith("/"):
        host = rest.split("/", 1)[0]
        raise _bad_url(
            url,
            f"it has a host part ({host!r}) but the file must be local: write sqlite:///path "
            "or sqlite:////abs/path",
        )
    encoded = rest[1:]
    if not encoded:
        raise _bad_url(url, "it has no file path")
    decoded = urllib.parse.unquote(encoded, errors="surrogateescape")
    if "\x00" in decoded:
        raise _bad_url(url, "its path contains a NUL character")
    if decoded.endswith("/"):
        raise _bad_url(url, "its path names a directory, not a file")
    path = pathlib.Path(os.path.abspath(decoded))
    return path, _parse_query(url, query)


def _parse_query(url: str, query: str) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise _bad_url(url, f"its query is malformed ({exc})") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise _bad_url(url, f"the query parameter {name!r} is given more than once")
        params[name] = value
    return params


# Network and cluster filesystems, as named in /proc/self/mountinfo. FUSE filesystems show as
# ``fuse.<subtype>``. Anything starting with ``nfs``, ``smb`` or ``cifs`` counts as well.
NETWORK_FILESYSTEMS = frozenset(
    {
        "9p",
        "afs",
        "beegfs",
        "ceph",
        "cifs",
        "coda",
        "fuse.ceph-fuse",
        "fuse.gcsfuse",
        "fuse.glusterfs",
        "fuse.juicefs",
        "fuse.mfs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.sshfs",
        "fuse.vmhgfs-fuse",
        "glusterfs",
        "gfs2",
        "gpfs",
        "lustre",
        "ncpfs",
        "nfs",
        "nfs4",
        "ocfs2",
        "orangefs",
        "panfs",
        "pvfs2",
        "smb3",
        "smbfs",
        "vboxsf",
        "wekafs",
    }
)
_NETWORK_PREFIXES = ("nfs", "smb", "cifs")

ALLOW_NETWORK_FS_ENV = "KIWIPY_SQLITE_ALLOW_NETWORK_FS"
_MOUNTINFO = "/proc/self/mountinfo"
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _is_network(fstype: str) -> bool:
    return fstype in NETWORK_FILESYSTEMS or fstype.startswith(_NETWORK_PREFIXES)


def _unescape(field: str) -> str:
    # the kernel writes space, tab, newline and backslash in mount points as \040 \011 \012 \134
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def _mounts(mountinfo_text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of each well-formed line, in the file's order."""
    mounts = []
    for line in mountinfo_text.splitlines():
        fields = line.split(" ")
        # id parent major:minor root mount-point options [optional fields...] - type source ...
        try:
            separator = fields.index("-", 6)
        except ValueError:
            continue
        if separator + 1 >= len(fields):
            continue
        mounts.append((_unescape(fields[4]), fields[separator + 1]))
    return mounts


def filesystem_type(path: pathlib.Path, mountinfo_text: Optional[str] = None) -> str:
    """The type of the filesystem that holds (or will hold) the file *path*: ``'ext4'``,
    ``'nfs4'``, ... or ``''`` when it cannot be told (no ``/proc/self/mountinfo``, as on
    macOS, or no mount point matches).

    Symbolic links in *path* are resolved first (SQLite puts its ``-wal`` and ``-shm``
    files next to the real file); then the mount point that is the longest prefix of the
    file's directory wins (of two mounts on the same point, the later one, which hides the
    earlier).

    :param mountinfo_text: the mount table in ``/proc/self/mountinfo``'s format; ``None``
        reads that file.
    """
    if mountinfo_text is None:
        try:
            with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as file:
                mountinfo_text = file.read()
        except OSError:
            return ""
    directory = os.path.dirname(os.path.realpath(path))
    best_length, best_type = -1, ""
    for mount_point, fstype in _mounts(mountinfo_text):
        stem = mount_point.rstrip("/")
        if directory != mount_point and not directory.startswith(stem + "/"):
            continue
        if len(stem) >= best_length:
            best_length, best_type = len(stem), fstype
    return best_type


def check_local_filesystem(path: pathlib.Path, *, mountinfo_text: Optional[str] = None) -> None:
    """Refuse a database file on a network or cluster filesystem (NFS, SMB, Lustre, GPFS,
    CephFS, sshfs, ...): SQLite's WAL mode needs shared memory and POSIX locks that those do
    not provide, and would corrupt the database or lose messages there. Where the type
    cannot be told (no ``/proc/self/mountinfo``), nothing is refused.

    Setting the environment variable ``KIWIPY_SQLITE_ALLOW_NETWORK_FS=1`` skips the check,
    at the user's own risk: for a filesystem known to give coherent locks and shared memory
    to the processes of one host, or one this list names wrongly.

    :param mountinfo_text: see :func:`filesystem_type` (for tests).
    :raises NetworkFilesystemError: naming the path and the filesystem's type.
    """
    if os.environ.get(ALLOW_NETWORK_FS_ENV, "").strip().lower() in ("1", "true", "yes"):
        return
    fstype = filesystem_type(path, mountinfo_text)
    if _is_network(fstype):
        raise NetworkFilesystemError(str(path), fstype)


def create_private(path: pathlib.Path) -> None:
    """Create the file *path*, empty and readable and writable by its owner only (mode 0600
    whatever the umask), unless it exists (then it is left alone, as when another process
    creates it first).

    :raises FileNotFoundError: naming the directory, when the file's directory does not
        exist (it is not created: a mistyped path should not make a tree of directories).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except FileNotFoundError:
        if not os.path.isdir(path.parent):
            raise FileNotFoundError(
                errno.ENOENT,
                f"the directory {path.parent} for the SQLite file {path.name} does not exist; "
                "create it first",
                str(path.parent),
            ) from None
        raise
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def sidecar_dir(path: pathlib.Path) -> pathlib.Path:
    """The directory ``<file name>-kiwipy`` next to the database *path* (``/x/a.db`` ->
    ``/x/a.db-kiwipy``), created with mode 0700 if missing (by this process or another:
    either is fine).

    :raises FileExistsError: if that name is taken by something that is not a directory.
    """
    directory = path.with_name(path.name + "-kiwipy")
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        if not directory.is_dir():
            raise FileExistsError(
                errno.EEXIST,
                f"{directory} exists but is not a directory (kiwipy keeps its lock files "
                "there); remove it",
                str(directory),
            ) from None
        return directory
    os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask
    return directory


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
