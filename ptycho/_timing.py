"""The wall time of a call: the timing primitive of `python -m ptycho` and the benchmark."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["best_time", "wait"]


def wait(result) -> None:
    """Wait for `result`: a device may finish after the call returns.

    Only one element is copied to the host: `Tensor.numpy()` of the whole result would add a
    copy of the output to every timing and memory figure.
    """
    if hasattr(result, "numpy"):
        (result if result.shape.rank == 0 else result[:1]).numpy()


def best_time(
    run: Callable[[], object], repeats: int, warm_up: Callable[[], object] | None = None
) -> float:
    """Best wall time in seconds of `repeats` calls of `run`, each waited for, after one
    untimed warm-up call of `warm_up` (of `run` itself by default).

    Each result is freed before the clock stops, as a caller that drops it would free it.
    """
    wait((warm_up or run)())
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        wait(run())
        best = min(best, time.perf_counter() - start)
    return best
