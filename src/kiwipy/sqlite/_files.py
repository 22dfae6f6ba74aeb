"""Creating the database file (mode 0600, :func:`create_private`) and the directory next
to it (mode 0700, :func:`sidecar_dir`) that holds the per-process lock files
(:mod:`._lockfile`). Nothing here talks to SQLite; the URL is :mod:`._url`'s, the filesystem
checks :mod:`._filesystem`'s."""

from __future__ import annotations

import errno
import os
import pathlib

__all__ = ("create_private", "sidecar_dir")


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
