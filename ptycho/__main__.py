"""`python -m ptycho`: extract patches from the built-in object and compare with the loop.

Times the legacy per-patch loop against the batched XLA path on the same object and
positions, prints the speedup and the largest difference between the two, and measures
the batched patches against the float64 SciPy oracle in complex64 and complex128.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ptycho._args import Parser, UsageError, positive
from ptycho._timing import best_time

PROG = "python -m ptycho"


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--size", type=positive("--size"), default=512, help="object side in pixels (512)")
    add("--N", type=positive("--N"), default=64, help="patch size (64)")
    add("--gridsize", type=positive("--gridsize"), default=2, help="group side (2)")
    add("--groups", type=positive("--groups"), default=1024, help="number of groups B (1024)")
    add(
        "--loop-patches",
        type=positive("--loop-patches"),
        default=64,
        help="patches timed with the slow legacy loop, extrapolated to all (64)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    from ptycho._quiet import native_logs_hidden

    # TensorFlow's native start-up lines are hidden; `PTYCHO_TF_LOGS=1` shows them.
    with native_logs_hidden(clean_exceptions=(KeyboardInterrupt,)):
        return _demo(args)


def _demo(args) -> int:
    import numpy as np
    import tensorflow as tf

    from ptycho import raw_data, tf_helper
    from ptycho.demo import demo_object, demo_scan

    N, c, B = args.N, args.gridsize**2, args.groups
    obj = demo_object(args.size)
    positions = demo_scan(args.size, B * c).astype(np.float32)
    offsets_f = positions.reshape(B * c, 1, 2, 1)
    gt_padded = tf_helper.pad(tf.constant(obj[None, :, :, None]), N // 2)
    print(
        f"object {args.size}x{args.size} complex64, "
        f"{B * c} patches of {N}x{N} (gridsize {args.gridsize})"
    )

    def batched():
        return raw_data._get_image_patches_batched(gt_padded, offsets_f, N, B, c)

    best = best_time(batched, 5)  # best of 5: single runs on a shared machine vary a lot
    print(f"batched (PatchExtractionLayer, XLA): {best * 1e3:9.1f} ms")

    groups = max(1, min(B, args.loop_patches // c))

    def loop(count: int = groups):
        return raw_data._get_image_patches_iterative(gt_padded, offsets_f[: count * c], N, count, c)

    # The loop is slow: one timed run, after a compiling run on one group.
    loop_time = best_time(loop, 1, warm_up=lambda: loop(1)) * B / groups
    label = "measured" if groups == B else f"extrapolated from {groups * c} patches"
    print(f"legacy loop (translate per patch):   {loop_time * 1e3:9.1f} ms ({label})")
    print(f"speedup: {loop_time / best:.0f}x")
    diff = np.abs(batched().numpy()[:groups] - loop().numpy()).max()
    print(
        f"max |batched - loop| over {groups * c} patches: {diff:.2e} "
        f"(max |obj| = {np.abs(obj).max():.2f})"
    )

    oracle_positions = np.concatenate([positions[:: max(1, B * c // 48)], _edge_positions(args)])
    for dtype in (np.complex64, np.complex128):
        error = _oracle_error(obj.astype(dtype), oracle_positions, N)
        print(
            f"{np.dtype(dtype).name} vs float64 oracle: max error {error:.2e} x max|obj| "
            f"over {len(oracle_positions)} patches, edges included"
        )
    return 0


def _edge_positions(args):
    import numpy as np

    far, last = args.N / 2 + 1.5, args.size - 1
    return np.array(
        [[-far, -far], [last + far, 3.25], [10.5, last + 0.5], [-0.5, last / 2], [last, last]]
    )


def _oracle_error(obj, positions, N) -> float:
    import numpy as np

    from ptycho import PatchExtractionLayer
    from ptycho.reference import oracle_patches

    real = np.float32 if obj.dtype == np.complex64 else np.float64
    patches = PatchExtractionLayer(N)(obj, positions.astype(real)).numpy()[..., 0]
    expected = oracle_patches(obj, positions.astype(real), N)
    return float(np.abs(patches - expected).max() / np.abs(obj).max())


if __name__ == "__main__":
    sys.exit(main())
