"""Refusing a database on a network filesystem, where SQLite's WAL mode cannot work:
:func:`check_local_filesystem`, with :func:`filesystem_type` reading the mount table."""

from __future__ import annotations

import os
import pathlib
import re
from typing import Optional

from ..exceptions import NetworkFilesystemError

__all__ = (
    "ALLOW_NETWORK_FS_ENV",
    "NETWORK_FILESYSTEMS",
    "check_local_filesystem",
    "filesystem_type",
)

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
