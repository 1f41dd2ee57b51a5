"""Files written safely: a temporary file beside the target, moved into place when complete.

Only a regular file, or nothing, at the target is ever replaced. A symbolic link, a
directory, a FIFO, a socket or a device at the target is refused, with or without `force`:
a link is neither replaced nor written through.

Temporaries are named `.{target name}.{host}.{pid}.{random}.partial`, so that a later run
can tell the leftover of a dead run (killed with SIGKILL, or a crashed machine) from the
file of a run still writing, and remove it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: the process check alone tells a dead run
    fcntl = None

__all__ = ["OVERWRITE_HINT", "atomic_path", "check_target", "other_writers"]

#: The advice in the message of an existing target refused without `force`.
OVERWRITE_HINT = "pass force=True to overwrite"

_SUFFIX = ".partial"
_AT_FDCWD = -100  # Linux
_RENAME_NOREPLACE = 1
_KINDS = (
    (stat.S_ISLNK, "a symbolic link (it is neither replaced nor written through)"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def check_target(target, force: bool = False) -> os.stat_result | None:
    """What is at `target` now (the link itself for a symbolic link), or `None` for nothing.

    Raises:
        FileExistsError: `target` is a regular file and `force` is false, or it is not a
            regular file (a symbolic link, a FIFO, a socket, a device): never replaced.
        IsADirectoryError: `target` is a directory.
    """
    try:
        info = os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        return None
    mode = info.st_mode
    if stat.S_ISREG(mode):
        if not force:
            raise FileExistsError(errno.EEXIST, f"already exists ({OVERWRITE_HINT})", str(target))
        return info
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(target))
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise FileExistsError(
        errno.EEXIST, f"is {kind}; only a regular file is ever replaced", str(target)
    )


@contextlib.contextmanager
def atomic_path(target, force: bool = False) -> Iterator[Path]:
    """A temporary path beside `target` that replaces it only when the block succeeds.

    An interrupted or failed write leaves no partial file at `target`; the temporary file
    is removed. Without `force`, an existing `target` is never overwritten, not even one
    that another program creates while the block runs (:class:`FileExistsError` at the
    end). With `force`, a regular file at `target` is replaced and its permission bits are
    kept; a new file gets those of a plainly created one. Anything but a regular file at
    `target` is refused, with or without `force` (see :func:`check_target`).

    Partial files of `target` left by dead processes of this host are removed on entry.
    Those of live processes, or of other hosts, are left alone silently;
    :func:`other_writers` lists them.
    """
    target = Path(target)
    check_target(target, force)
    for leftover, stale in _partials(target):
        if stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    prefix = f".{target.name}.{_host()}.{os.getpid()}."
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=_SUFFIX, dir=target.parent)
    temporary = Path(name)
    try:
        if fcntl is not None:  # held while this process lives: the file is in use
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.chmod(temporary, 0o666 & ~_umask())  # the permissions of a plainly created file
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        if force:
            info = check_target(target, force=True)  # what is there now, right before
            if info is not None:
                os.chmod(temporary, stat.S_IMODE(info.st_mode) & 0o777)
            os.replace(temporary, target)
        else:
            _rename_noreplace(temporary, target)
        with contextlib.suppress(OSError):  # make the rename itself durable
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        os.close(handle)
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def other_writers(target) -> list[Path]:
    """Partial files of `target` that a live process, or another host, may be writing."""
    return [partial for partial, stale in _partials(Path(target)) if not stale]


def _partials(target: Path) -> list[tuple[Path, bool]]:
    """The regular files named like a partial file of `target`, each with whether it is
    stale: left by a dead process of this host, and not locked by a live one."""
    pattern = re.compile(
        re.escape(f".{target.name}.")
        + r"(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]+)\.[A-Za-z0-9_]+"
        + re.escape(_SUFFIX)
    )
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    host, found = _host(), []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        with contextlib.suppress(OSError):
            if match and entry.is_file(follow_symlinks=False):
                dead = match["host"] == host and not _alive(int(match["pid"]))
                found.append((Path(entry.path), dead and not _locked(entry.path)))
    return found


def _host() -> str:
    """This host's name as it appears in partial file names: no dots, at most 32 characters."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _alive(pid: int) -> bool:
    """Whether process `pid` of this host may be running: `True` when in doubt."""
    if os.name == "nt":  # there, os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (EPERM), or no such number
        return True
    return True


def _locked(path: str) -> bool:
    """Whether a process holds the lock of the partial file at `path` (a live writer in
    another pid namespace with the same host name)."""
    if fcntl is None:
        return False
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    descriptor = os.open(path, flags)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no locks on this file system: the process check decides
        return False
    finally:
        os.close(descriptor)
    return False


def _appeared(target: Path) -> FileExistsError:
    return FileExistsError(
        errno.EEXIST,
        f"was created by another program during this run and was kept ({OVERWRITE_HINT})",
        str(target),
    )


def _rename_noreplace(source: Path, target: Path) -> None:
    """Move `source` to `target` in one step that fails if `target` exists by then."""
    code = _renameat2(source, target)
    if code == 0:
        return
    if code == errno.EEXIST:
        raise _appeared(target)
    # Unsupported here (old kernels, some file systems; sandboxes answer EPERM): fall back.
    # A real permission problem then surfaces from the link.
    unsupported = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)
    if code is not None and code not in unsupported:
        raise OSError(code, os.strerror(code), str(target))
    try:  # no renameat2 here: a hard link is created only where nothing is
        os.link(source, target)
    except FileExistsError:
        raise _appeared(target) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        _claim_and_replace(source, target)
        return
    source.unlink()


def _claim_and_replace(source: Path, target: Path) -> None:
    """For file systems with neither renameat2 nor hard links (FAT, exFAT, some FUSE file
    systems): the name is claimed by creating an empty file exclusively, which fails if
    anything is there, and that empty file is then replaced. A reader may see the empty
    file for that moment; it is removed again if the replace does not happen."""
    try:
        claim = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise _appeared(target) from None
    claimed = os.fstat(claim).st_ino
    os.close(claim)
    try:
        os.replace(source, target)
    except BaseException:
        with contextlib.suppress(OSError):
            if os.lstat(target).st_ino == claimed:
                os.unlink(target)
        raise


def _renameat2(source: Path, target: Path) -> int | None:
    """0, or the error of `renameat2(..., RENAME_NOREPLACE)`; `None` where there is none."""
    function = _renameat2_function()
    if function is None:
        return None
    if (
        function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE)
        == 0
    ):
        return 0
    return ctypes.get_errno()


@functools.cache
def _renameat2_function():
    """glibc's `renameat2` (2.28 and later), or `None`."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
