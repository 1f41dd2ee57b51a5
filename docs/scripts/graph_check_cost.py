"""What the run-time finiteness check on positions costs inside a `tf.function` graph.

    python docs/scripts/graph_check_cost.py

`extract_patches` inside a `tf.function` (without `jit_compile`) checks its positions
with `tf.debugging.check_numerics`, so that a NaN position raises. This times the default
benchmark case (4,096 patches of 64 x 64 from a 512 x 512 complex64 object) traced with
the check and with the check replaced by `tf.identity`, alternating, best of many runs.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from ptycho import extract_patches


def best(fn, *args, runs: int = 15) -> float:
    fn(*args).numpy()  # compile and warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(*args).numpy()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    obj = tf.constant((rng.standard_normal((512, 512)) + 1j).astype(np.complex64))
    positions = tf.constant(rng.uniform(32, 480, (1024, 1, 2, 4)).astype(np.float32))
    checked = tf.function(lambda o, p: extract_patches(o, p, 64))
    original = tf.debugging.check_numerics
    tf.debugging.check_numerics = lambda x, message: tf.identity(x)
    try:
        unchecked = tf.function(lambda o, p: extract_patches(o, p, 64))
        unchecked(obj, positions)  # traced without the check
    finally:
        tf.debugging.check_numerics = original
    rounds = {"with check": [], "without": []}
    for _ in range(3):
        rounds["with check"].append(best(checked, obj, positions))
        rounds["without"].append(best(unchecked, obj, positions))
    with_check, without = min(rounds["with check"]), min(rounds["without"])
    print(f"tf.function, 4096 patches of 64 x 64: with check {with_check * 1e3:.2f} ms, ", end="")
    print(f"without {without * 1e3:.2f} ms, cost {(with_check / without - 1) * 100:+.1f} %")


if __name__ == "__main__":
    main()
