"""Peak resident memory of the hostile-input cases of issue 11, each in a fresh process.

    python docs/scripts/peak_rss.py [--quick]

Prints one Markdown table row per case: the peak RSS of the child process (from
`wait4`), the peak of the same process on a small harmless input (the baseline: Python,
NumPy, TensorFlow), and the limit the library sets for the case. `--quick` uses smaller
cases (for a try run).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np

MiB = 2**20


def run_child(code: str, *args: str) -> tuple[int, int, str]:
    """(peak RSS in bytes, exit status, last output line) of `python -c code args`."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    with tempfile.TemporaryFile("w+") as log:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-c", textwrap.dedent(code), *args],
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
            ],
        )
        _, status, usage = os.wait4(pid, 0)
        log.seek(0)
        lines = [line for line in log.read().splitlines() if line.strip()]
    return usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status), lines[-1] if lines else ""


def zeros_member(archive: zipfile.ZipFile, name: str, shape, dtype) -> None:
    """A `.npy` member of zeros, deflated while written (never held in memory)."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(0, dtype))
    header["shape"] = tuple(shape)
    with archive.open(name, "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, header)
        left = int(np.prod(shape)) * np.dtype(dtype).itemsize
        block = bytes(64 * MiB)
        while left:
            member.write(block[: min(left, len(block))])
            left -= min(left, len(block))


def small_members(archive: zipfile.ZipFile) -> None:
    rng = np.random.default_rng(0)
    for key, value in {
        "xcoords": rng.uniform(40, 200, 256),
        "ycoords": rng.uniform(40, 200, 256),
    }.items():
        with archive.open(f"{key}.npy", "w") as member:
            np.lib.format.write_array(member, value)


def bomb(path: Path, object_shape, junk_shape=None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        small_members(archive)
        if object_shape[0] <= 1024:
            obj = np.ones(object_shape, np.complex64)
            with archive.open("objectGuess.npy", "w") as member:
                np.lib.format.write_array(member, obj)
        else:
            zeros_member(archive, "objectGuess.npy", object_shape, np.complex64)
        if junk_shape is not None:
            zeros_member(archive, "junk.npy", junk_shape, np.float64)
    return path


CLI = "import sys; from ptycho.cli import main; sys.exit(main(sys.argv[1:]))"

GROUPING = """
import sys, numpy as np, scipy.spatial
from ptycho import grouping
n, k = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
x, y = rng.uniform(0, 10_000, n), rng.uniform(0, 10_000, n)
if k:
    groups = grouping.group_positions(x, y, gridsize=2, neighbors=k)
    print(len(groups.nn_indices), 'groups')
"""

SHAPES = """
import sys, numpy as np, tensorflow as tf, ptycho
count = int(sys.argv[1])
rng = np.random.default_rng(0)
positions = rng.uniform(0, 24, (64, 2)).astype(np.float32)
for shape in rng.integers(32, 1025, (count, 2)):
    obj = tf.constant(np.ones(shape, np.complex64))
    with tf.GradientTape() as tape:
        tape.watch(obj)
        loss = tf.reduce_sum(tf.abs(ptycho.extract_patches(obj, positions, 16)))
    tape.gradient(loss, obj)
print(count, 'shapes')
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = bomb(tmp / "small.npz", (512, 512))
        base, _, _ = run_child(CLI, "extract", str(small), "-o", str(tmp / "base.npz"), "--N", "32")

        side = 4096 if quick else 16384  # 128 MiB or 2 GiB of complex64 zeros
        junk = bomb(tmp / "junk.npz", (512, 512), junk_shape=(side * side,))
        rss, code, line = run_child(
            CLI, "extract", str(junk), "-o", str(tmp / "j.npz"), "--N", "32"
        )
        rows.append(
            (
                f"zip bomb, junk member {side * side * 8 / 2**30:.1f} GiB in "
                f"{junk.stat().st_size / MiB:.1f} MiB",
                rss,
                base,
                "baseline + 64 MiB (the member is never read)",
                f"exit {code}",
            )
        )

        objb = bomb(tmp / "obj.npz", (side, side))
        size = side * side * 8
        rss, code, line = run_child(
            CLI, "extract", str(objb), "-o", str(tmp / "o.npz"), "--N", "32", "--groups", "16"
        )
        rows.append(
            (
                f"zip bomb, objectGuess {size / 2**30:.1f} GiB in "
                f"{objb.stat().st_size / MiB:.1f} MiB",
                rss,
                base,
                "baseline + 3 x object (the array, TensorFlow's copy, the margined table)",
                f"exit {code}",
            )
        )
        os.unlink(objb)

        side = 8192 if quick else 49152  # 0.5 GiB or 18 GiB
        huge = bomb(tmp / "huge.npz", (side, side))
        rss, code, line = run_child(
            CLI, "extract", str(huge), "-o", str(tmp / "h.npz"), "--N", "32"
        )
        rows.append(
            (
                f"zip bomb, objectGuess {side * side * 8 / 2**30:.1f} GiB in "
                f"{huge.stat().st_size / MiB:.1f} MiB",
                rss,
                base,
                "refused before reading when above the free memory",
                f"exit {code}: {line[:90]}",
            )
        )
        os.unlink(huge)

    n = 10**5 if quick else 10**6
    from ptycho.grouping import grouping_bytes

    gbase, _, _ = run_child(GROUPING, str(n), "0")
    rss, code, line = run_child(GROUPING, str(n), "200")
    rows.append(
        (
            f"`--neighbors 200`, gridsize 2, {n:.0e} positions",
            rss,
            gbase,
            f"baseline + grouping_bytes = {grouping_bytes(n, 2, None, 200) / MiB:.0f} MiB",
            f"exit {code}: {line}",
        )
    )

    count = 20 if quick else 200
    sbase, _, _ = run_child(SHAPES, "1")
    rss, code, line = run_child(SHAPES, str(count))
    rows.append(
        (
            f"{count} distinct object shapes (32 to 1024 a side), with gradients",
            rss,
            sbase,
            "baseline + 36 buckets x 2 programs x 1-4 MiB (<= 288 MiB)",
            f"exit {code}: {line}",
        )
    )

    print("| case | peak RSS | baseline | above baseline | limit | outcome |")
    print("|---|---:|---:|---:|---|---|")
    for case, rss, base, limit, outcome in rows:
        print(
            f"| {case} | {rss / MiB:.0f} MiB | {base / MiB:.0f} MiB | "
            f"{(rss - base) / MiB:.0f} MiB | {limit} | {outcome} |"
        )


if __name__ == "__main__":
    main()
