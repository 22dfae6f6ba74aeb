"""The sqlite:// transport's file-system side: URLs, the network filesystem check, private
files, and lock files that tell whether their owner process lives."""

from __future__ import annotations

import os
import pathlib
import pickle
import select
import signal
import subprocess
import sys
import warnings
from typing import Callable

import pytest

import kiwipy
from kiwipy.sqlite import _files, _filesystem, _url
from kiwipy.sqlite._lockfile import LockFile, is_held

# URLs


def test_relative_url_is_made_absolute(tmp_path: pathlib.Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path, params = _url.parse_url("sqlite:///sub/kiwi.db")
    assert path == tmp_path / "sub" / "kiwi.db"
    assert path.is_absolute()
    assert params == {}


def test_absolute_url() -> None:
    assert _url.parse_url("sqlite:////var/lib/kiwi.db") == (pathlib.Path("/var/lib/kiwi.db"), {})


def test_query_parameters() -> None:
    path, params = _url.parse_url("sqlite:////tmp/k.db?synchronous=normal&x=y&empty=")
    assert path == pathlib.Path("/tmp/k.db")
    assert params == {"synchronous": "normal", "x": "y", "empty": ""}


def test_percent_decoding() -> None:
    path, params = _url.parse_url("sqlite:////tmp/my%20dir/a%3Fb.db?x=a%20b")
    assert path == pathlib.Path("/tmp/my dir/a?b.db")
    assert params == {"x": "a b"}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("memory://", "does not start with sqlite://"),
        ("sqlite:/x.db", "does not start with sqlite://"),
        ("sqlite://host/path.db", "has a host part ('host') but the file must be local"),
        ("sqlite://", "has no file path"),
        ("sqlite:///", "has no file path"),
        ("sqlite://:memory:", "use memory:// for a single process"),
        ("sqlite:///:memory:", "use memory:// for a single process"),
        ("sqlite:////tmp/dir/", "names a directory"),
        ("sqlite:////tmp/a%00b.db", "NUL"),
        ("sqlite:////tmp/k.db?x=1&x=2", "'x' is given more than once"),
        ("sqlite:////tmp/k.db?novalue", "query is malformed"),
    ],
)
def test_bad_urls(url: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        _url.parse_url(url)
    message = str(info.value)
    assert reason in message
    assert repr(url) in message
    assert "sqlite:///relative/path.db" in message
    assert "sqlite:////absolute/path.db" in message


def test_host_error_shows_the_local_forms() -> None:
    with pytest.raises(ValueError, match=r"sqlite:///path or sqlite:////abs/path"):
        _url.parse_url("sqlite://server/data/k.db")


# Filesystem types

MOUNTINFO = "\n".join(
    [
        "22 1 0:21 / /proc rw,relatime shared:5 - proc proc rw",
        "1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
        "30 1 0:40 / /nethome rw,relatime shared:7 master:2 - nfs4 srv:/home rw,vers=4.2",
        "31 30 8:2 / /nethome/u/scratch rw,relatime - xfs /dev/sdb1 rw",
        r"32 1 8:3 / /mnt/my\040disk rw - btrfs /dev/sdc1 rw",
        "33 1 0:41 / /mnt/cluster rw - lustre 10.0.0.1@tcp:/fs rw",
        "34 1 0:42 / /mnt/remote rw - fuse.sshfs user@host:/ rw",
        "malformed line without a separator",
        "",
    ]
)

# These paths do not exist here, so resolving their symbolic links leaves them unchanged.


@pytest.mark.parametrize(
    ("path", "fstype"),
    [
        ("/nethome/u/x.db", "nfs4"),
        ("/nethome/x.db", "nfs4"),
        ("/nethome/u/scratch/x.db", "xfs"),  # the longest prefix wins
        ("/nethome/u/scratch/deeper/x.db", "xfs"),
        ("/nethomes/x.db", "ext4"),  # a prefix of the name is not a prefix of the path
        ("/x.db", "ext4"),
        ("/srv/data/x.db", "ext4"),
        ("/mnt/my disk/x.db", "btrfs"),  # \040 in the mount point is a space
        ("/mnt/cluster/x.db", "lustre"),
        ("/mnt/remote/x.db", "fuse.sshfs"),
    ],
)
def test_filesystem_type(path: str, fstype: str) -> None:
    assert _filesystem.filesystem_type(pathlib.Path(path), MOUNTINFO) == fstype


def test_a_later_mount_on_the_same_point_hides_the_earlier() -> None:
    text = MOUNTINFO + "\n40 1 0:50 / /nethome rw - tmpfs tmpfs rw\n"
    assert _filesystem.filesystem_type(pathlib.Path("/nethome/u/x.db"), text) == "tmpfs"


def test_unknown_type_is_empty() -> None:
    assert _filesystem.filesystem_type(pathlib.Path("/x.db"), "") == ""
    _filesystem.check_local_filesystem(pathlib.Path("/x.db"), mountinfo_text="")


def test_symbolic_links_are_resolved(tmp_path: pathlib.Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    real = os.path.realpath(tmp_path / "real")
    text = f"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:40 / {real} rw - nfs4 srv:/x rw\n"
    assert _filesystem.filesystem_type(tmp_path / "link" / "x.db", text) == "nfs4"


def test_this_machines_mount_table() -> None:
    # whatever the machine, the check reads the real table without failing
    _filesystem.filesystem_type(pathlib.Path("/tmp/x.db"))


@pytest.mark.parametrize("path", ["/nethome/u/x.db", "/mnt/cluster/x.db", "/mnt/remote/x.db"])
def test_network_filesystems_are_refused(path: str, monkeypatch) -> None:
    monkeypatch.delenv(_filesystem.ALLOW_NETWORK_FS_ENV, raising=False)
    with pytest.raises(kiwipy.NetworkFilesystemError) as info:
        _filesystem.check_local_filesystem(pathlib.Path(path), mountinfo_text=MOUNTINFO)
    error = info.value
    assert isinstance(error, OSError)
    assert isinstance(error, kiwipy.KiwiError)
    assert error.path == path
    assert error.fstype == _filesystem.filesystem_type(pathlib.Path(path), MOUNTINFO)
    message = str(error)
    assert path in message and error.fstype in message
    assert "SQLite's WAL needs shared memory and POSIX locks" in message
    assert "/tmp or $TMPDIR" in message and "RabbitMQ" in message
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.fstype, str(copy)) == (error.path, error.fstype, message)


@pytest.mark.parametrize("path", ["/nethome/u/scratch/x.db", "/x.db", "/mnt/my disk/x.db"])
def test_local_filesystems_are_accepted(path: str, monkeypatch) -> None:
    monkeypatch.delenv(_filesystem.ALLOW_NETWORK_FS_ENV, raising=False)
    _filesystem.check_local_filesystem(pathlib.Path(path), mountinfo_text=MOUNTINFO)


def test_the_environment_overrides_the_check(monkeypatch) -> None:
    monkeypatch.setenv(_filesystem.ALLOW_NETWORK_FS_ENV, "1")
    _filesystem.check_local_filesystem(pathlib.Path("/nethome/u/x.db"), mountinfo_text=MOUNTINFO)
    monkeypatch.setenv(_filesystem.ALLOW_NETWORK_FS_ENV, "0")
    with pytest.raises(kiwipy.NetworkFilesystemError):
        _filesystem.check_local_filesystem(
            pathlib.Path("/nethome/u/x.db"), mountinfo_text=MOUNTINFO
        )


# Private files and the sidecar directory


def _mode(path: pathlib.Path) -> int:
    return path.stat().st_mode & 0o777


def test_create_private_ignores_the_umask(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "k.db"
    old = os.umask(0)
    try:
        _files.create_private(path)
    finally:
        os.umask(old)
    assert _mode(path) == 0o600
    assert path.read_bytes() == b""


def test_create_private_leaves_an_existing_file_alone(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "k.db"
    path.write_bytes(b"data")
    path.chmod(0o640)
    _files.create_private(path)
    assert path.read_bytes() == b"data"
    assert _mode(path) == 0o640


def test_create_private_needs_the_directory(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        _files.create_private(missing / "k.db")
    assert not (tmp_path / "no").exists()


def test_sidecar_dir(tmp_path: pathlib.Path) -> None:
    old = os.umask(0)
    try:
        directory = _files.sidecar_dir(tmp_path / "a.db")
    finally:
        os.umask(old)
    assert directory == tmp_path / "a.db-kiwipy"
    assert directory.is_dir()
    assert _mode(directory) == 0o700
    assert _files.sidecar_dir(tmp_path / "a.db") == directory  # a second call finds it


def test_sidecar_name_taken_by_a_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.db-kiwipy").write_bytes(b"")
    with pytest.raises(FileExistsError, match="not a directory"):
        _files.sidecar_dir(tmp_path / "a.db")


# Lock files


def test_lock_file_held_and_released(tmp_path: pathlib.Path) -> None:
    lock = LockFile.create(tmp_path, "p1")
    assert lock.path == tmp_path / "p1.lock"
    assert _mode(lock.path) == 0o600
    assert is_held(lock.path)  # a separate open from this process sees the lock too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p1.lock"]  # no staging file left
    lock.release()
    assert lock.released
    assert not lock.path.exists()
    assert not is_held(lock.path)
    lock.release()  # idempotent


def test_lock_file_name_taken(tmp_path: pathlib.Path) -> None:
    with LockFile.create(tmp_path, "p1") as lock:
        with pytest.raises(FileExistsError, match="exists already"):
            LockFile.create(tmp_path, "p1")
        assert is_held(lock.path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["p1.lock"]
    assert not lock.path.exists()


@pytest.mark.parametrize("name", ["", "a/b", ".."])
def test_bad_lock_names(tmp_path: pathlib.Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid lock file name"):
        LockFile.create(tmp_path, name)


def test_an_unlocked_file_is_not_held(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "dead.lock"
    path.write_bytes(b"")
    assert not is_held(path)
    assert path.exists()  # left for the caller to clean up


def _read_line(stream: object, timeout: float) -> str:
    assert hasattr(stream, "fileno") and hasattr(stream, "readline")
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no line within {timeout} s"
    line: str = stream.readline()
    return line


def test_a_killed_owner_does_not_hold(tmp_path: pathlib.Path) -> None:
    src = pathlib.Path(_files.__file__).parents[2]
    code = (
        "import pathlib, sys\n"
        "from kiwipy.sqlite._lockfile import LockFile\n"
        "lock = LockFile.create(pathlib.Path(sys.argv[1]), 'child')\n"
        "print('READY', flush=True)\n"
        "sys.stdin.read()\n"  # holds the lock until killed
    )
    env = dict(os.environ, PYTHONPATH=str(src))
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = _read_line(child.stdout, 20)
        assert line == "READY\n", child.stderr.read() if child.stderr else ""
        path = tmp_path / "child.lock"
        assert is_held(path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.stdout is not None and child.stderr is not None and child.stdin is not None
        child.stdin.close()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert path.exists()  # a killed owner cannot remove its file...
    assert not is_held(path)  # ...but its lock went with it


def _fork(child: Callable[[], None]) -> int:
    """Fork; the child runs *child* and exits at once (status 0, or 1 if it raised)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            child()
            status = 0
        finally:
            os._exit(status)
    return pid


def _exit_status(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("child_releases", [False, True])
def test_a_forked_child_leaves_the_parents_lock(
    tmp_path: pathlib.Path, child_releases: bool
) -> None:
    with LockFile.create(tmp_path, "parent") as lock:

        def child() -> None:
            assert lock.released  # its descriptor was closed at the fork
            if child_releases:
                lock.release()  # the child's copy: must not remove the parent's file

        pid = _fork(child)
        assert _exit_status(pid) == 0
        assert lock.path.exists()
        assert is_held(lock.path)
        assert not lock.released


def test_a_forked_child_does_not_keep_the_lock(tmp_path: pathlib.Path) -> None:
    lock = LockFile.create(tmp_path, "parent")
    alias = tmp_path / "alias"  # the same file, still there after release() unlinks its name
    os.link(lock.path, alias)
    started_r, started_w = os.pipe()
    finish_r, finish_w = os.pipe()

    def child() -> None:
        os.close(started_r)
        os.close(finish_w)
        assert lock.released  # its descriptor was closed at the fork
        os.write(started_w, b"R")
        os.read(finish_r, 1)  # stay alive until the parent has checked

    pid = _fork(child)
    os.close(started_w)
    os.close(finish_r)
    try:
        ready, _, _ = select.select([started_r], [], [], 10)
        assert ready and os.read(started_r, 1) == b"R", "the child did not start"
        assert is_held(alias)
        lock.release()
        assert not is_held(alias)  # the child, still alive, does not hold it
    finally:
        os.write(finish_w, b"x")
        os.close(finish_w)
        os.close(started_r)
        assert _exit_status(pid) == 0
