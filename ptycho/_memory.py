"""Memory checks made before anything large is allocated (no TensorFlow import)."""

from __future__ import annotations

import os

__all__ = ["available_memory", "check_memory"]

# cgroup v1 writes "no limit" as the largest page-aligned int64, 9223372036854771712.
_NO_LIMIT = 2**62


def available_memory() -> int | None:
    """Bytes of host memory this process can still get, or `None` where it cannot say.

    The smaller of the system's available memory and what the tightest cgroup memory
    limit (v1 or v2), as in a container, leaves. Accelerator memory is not counted.
    """
    figures = [_meminfo(), _cgroup_room()]
    figures = [figure for figure in figures if figure is not None]
    return min(figures) if figures else None


def check_memory(nbytes: int, what: str, hint: str | None = None) -> None:
    """Refuse, before allocating anything, a request larger than the free memory.

    The error names `what` and ends with `hint`, by default advice on streaming patches.
    """
    available = available_memory()
    if available is not None and nbytes > available:
        if hint is None:
            hint = "Ask for less at a time: `ptycho.patch_dataset` streams patches in batches."
        raise ValueError(
            f"{what} would need {nbytes / 2**30:.1f} GiB, more than the "
            f"{available / 2**30:.1f} GiB of memory available. {hint}"
        )


def _meminfo(path: str = "/proc/meminfo") -> int | None:
    text = _read(path)
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            try:
                return int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                break
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _cgroup_room(root: str = "/sys/fs/cgroup", membership: str = "/proc/self/cgroup") -> int | None:
    """Bytes left under the tightest cgroup memory limit of this process, or `None`.

    `membership` lists the process's cgroups (`/proc/self/cgroup`): `0::/path` for the
    v2 hierarchy mounted at `root`, and `N:memory:/path` (among other controllers) for
    the v1 memory hierarchy at `root/memory`. Each is read from the process's own cgroup
    up to the mount's root, since a parent's limit binds too; a path not present under
    the mount (a container that shows its host path) leaves the mount's root files. A
    limit leaves `limit - usage`, where usage does not count the inactive file cache,
    which the kernel reclaims before it fails an allocation.
    """
    v2, v1 = _own_cgroups(membership)
    rooms = [
        _room(directory, "memory.max", "memory.current", "inactive_file")
        for directory in _up_to_root(root, v2)
    ]
    rooms += [
        _room(directory, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        for directory in _up_to_root(os.path.join(root, "memory"), v1)
    ]
    rooms = [room for room in rooms if room is not None]
    return min(rooms) if rooms else None


def _own_cgroups(membership: str) -> tuple[str, str]:
    """The process's v2 and v1-memory cgroup paths, `/` where not listed."""
    v2 = v1 = "/"
    for line in (_read(membership) or "").splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _up_to_root(mount: str, path: str):
    """`mount/path`, then each parent of it, ending at `mount` itself."""
    parts = [part for part in path.split("/") if part and part not in (".", "..")]
    for end in range(len(parts), -1, -1):
        yield os.path.join(mount, *parts[:end])


def _room(directory: str, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    limit = _number(_read(os.path.join(directory, limit_file)))
    if limit is None or limit >= _NO_LIMIT:  # absent, unreadable, "max" or no limit
        return None
    used = _number(_read(os.path.join(directory, usage_file)))
    if used is None:
        return None
    return max(0, limit - max(0, used - _stat(directory, inactive_key)))


def _stat(directory: str, key: str) -> int:
    """One figure of `memory.stat`, 0 where absent."""
    for line in (_read(os.path.join(directory, "memory.stat")) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return _number(value) or 0
    return 0


def _number(text: str | None) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _read(path: str) -> str | None:
    """The text of a small file, `None` if it cannot be read. Lower level than `open`: a
    third of the time, which counts here, as every extraction checks the memory."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = [os.read(descriptor, 65536)]
        while chunks[-1]:  # no assignment in the condition: AutoGraph converts this loop
            chunks.append(os.read(descriptor, 65536))  # when a `tf.function` traces it
        return b"".join(chunks).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(descriptor)
