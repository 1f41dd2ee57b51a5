"""Memory checks made before anything large is allocated (no TensorFlow import)."""

from __future__ import annotations

import os

__all__ = ["available_memory", "check_memory"]


def available_memory() -> int | None:
    """Bytes of memory the system can still give, or `None` where it cannot say."""
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


def check_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating anything, a request larger than the free memory."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise ValueError(
            f"{what} would need {nbytes / 2**30:.1f} GiB, more than the "
            f"{available / 2**30:.1f} GiB of memory available. Ask for less at a time: "
            "`ptycho.patch_dataset` and `ptycho-patches extract` stream patches in batches."
        )
