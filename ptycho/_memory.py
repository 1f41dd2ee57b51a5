"""Memory checks made before anything large is allocated (no TensorFlow import)."""

from __future__ import annotations

import os

__all__ = ["available_memory", "check_memory"]


def available_memory() -> int | None:
    """Bytes of host memory this process can still get, or `None` where it cannot say.

    The smaller of the system's available memory and what a cgroup (v2) memory limit, as
    in a container, leaves. Accelerator memory is not counted.
    """
    figures = [_meminfo(), _cgroup_room()]
    figures = [figure for figure in figures if figure is not None]
    return min(figures) if figures else None


def _meminfo() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _cgroup_room(root: str = "/sys/fs/cgroup") -> int | None:
    try:
        with open(os.path.join(root, "memory.max")) as limit:
            text = limit.read().strip()
        if text == "max":
            return None
        with open(os.path.join(root, "memory.current")) as current:
            return max(0, int(text) - int(current.read().strip()))
    except (OSError, ValueError):
        return None


def check_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating anything, a request larger than the free memory."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise ValueError(
            f"{what} would need {nbytes / 2**30:.1f} GiB, more than the "
            f"{available / 2**30:.1f} GiB of memory available. Ask for less at a time: "
            "`ptycho.patch_dataset` and `ptycho-patches extract` stream patches in batches."
        )
