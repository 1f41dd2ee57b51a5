"""Throw malformed calls at the public surface and classify what comes back.

    python tests/fuzz/fuzz_public.py [--cases 10000] [--seed 0]

Acceptable outcomes are a correct-looking result (finite output from finite input, the
expected shape) or a `ValueError` / `TypeError` with a message; on the command line, exit
status 0 or 2 with one line on stderr and no traceback. Anything else is a failure:
another exception type (including TensorFlow's internal errors), a hang, a crash, or NaN
output from finite input. The report counts every outcome per target.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

# A few valid shapes, so that the valid calls reuse compiled programs.
SIDES = [1, 3, 17]
SIZES = [1, 2, 5]


def _value(rng, kind=None):
    """A random, usually malformed, argument."""
    kind = kind or rng.choice(
        [
            "array",
            "array",
            "array",
            "scalar",
            "none",
            "string",
            "object",
            "list",
            "dict",
            "empty",
            "huge_int",
            "negative",
            "bool",
            "complex_scalar",
        ]
    )
    if kind == "array":
        rank = int(rng.integers(0, 6))
        shape = tuple(int(rng.choice([0, 1, 2, 3, 4, 17])) for _ in range(rank))
        dtype = rng.choice(
            [
                np.float32,
                np.float64,
                np.complex64,
                np.complex128,
                np.int32,
                np.int64,
                np.bool_,
                np.float16,
                np.uint8,
            ]
        )
        values = np.array(rng.standard_normal(shape) * rng.choice([1, 10, 1e6]))
        special = np.array(rng.random(shape) < 0.1)
        values[special] = rng.choice([np.nan, np.inf, -np.inf, 0.0, 1e30], size=special.sum())
        with np.errstate(all="ignore"):
            return values.astype(dtype)
    return {
        "scalar": lambda: float(rng.standard_normal()),
        "none": lambda: None,
        "string": lambda: "abc",
        "object": lambda: object(),
        "list": lambda: [[1, "x"], [2]],
        "dict": lambda: {"a": 1},
        "empty": lambda: np.zeros((0, 2), np.float32),
        "huge_int": lambda: 10**12,
        "negative": lambda: -3,
        "bool": lambda: True,
        "complex_scalar": lambda: 1 + 2j,
    }[kind]()


def _valid_obj(rng):
    h, w = rng.choice(SIDES), rng.choice(SIDES)
    dtype = rng.choice([np.complex64, np.complex128, np.float32, np.float64])
    obj = rng.standard_normal((h, w)) + (
        1j * rng.standard_normal((h, w)) if dtype in (np.complex64, np.complex128) else 0
    )
    return obj.astype(dtype)


def _valid_positions(rng, count, flat=True):
    pos = rng.uniform(-5, 25, (count, 2)).astype(np.float32)
    if rng.random() < 0.2:
        pos[rng.integers(count)] = rng.choice([1e6, -1e9, 3e9])
    return pos


def _maybe(rng, valid, p_valid=0.6):
    return valid() if rng.random() < p_valid else _value(rng)


def _targets():
    import tensorflow as tf

    from ptycho import extract_patches, patch_dataset, raw_data, reassemble_patches, tf_helper
    from ptycho.data import load_dataset
    from ptycho.grouping import group_positions
    from ptycho.layers import LearnableObject, PatchExtractionLayer

    def extract(rng):
        count = int(rng.choice([1, 2, 7]))
        obj = _maybe(rng, lambda: _valid_obj(rng))
        pos = _maybe(rng, lambda: _valid_positions(rng, count))
        N = _maybe(rng, lambda: int(rng.choice(SIZES)), 0.7)
        interp = rng.choice(["bilinear", "nearest", "fourier", "cubic", None])
        return extract_patches(obj, pos, N, interp), (obj, pos)

    def layer(rng):
        N = _maybe(rng, lambda: int(rng.choice(SIZES)), 0.8)
        interp = rng.choice(["bilinear", "nearest", "fourier", 3])
        made = PatchExtractionLayer(N, interp)
        obj = _maybe(rng, lambda: _valid_obj(rng))
        if rng.random() < 0.3:
            pos = _maybe(rng, lambda: rng.uniform(0, 10, (2, 1, 2, 4)).astype(np.float32))
        else:
            pos = _maybe(rng, lambda: _valid_positions(rng, 3))
        return made(obj, pos), (obj, pos)

    def translate(rng):
        imgs = _maybe(rng, lambda: _valid_obj(rng)[None, :, :, None])
        offsets = _maybe(rng, lambda: rng.uniform(-3, 3, (1, 2)).astype(np.float32))
        return tf_helper.translate(imgs, offsets, rng.choice(["bilinear", "nearest", "x"])), (
            imgs,
            offsets,
        )

    def pad(rng):
        imgs = _maybe(rng, lambda: _valid_obj(rng)[None, :, :, None])
        return tf_helper.pad(imgs, _maybe(rng, lambda: int(rng.integers(0, 4)))), (imgs,)

    def get_image_patches(rng):
        obj = _maybe(rng, lambda: _valid_obj(rng))
        g = _maybe(rng, lambda: rng.uniform(5, 10, (2, 1, 2, 1)).astype(np.float32))
        loc = _maybe(rng, lambda: rng.uniform(-2, 2, (2, 1, 2, 4)).astype(np.float32))
        N = _maybe(rng, lambda: int(rng.choice(SIZES)))
        gs = _maybe(rng, lambda: 2)
        return raw_data.get_image_patches(obj, g, loc, N=N, gridsize=gs), (obj, g, loc)

    def batched(rng):
        N = int(rng.choice(SIZES))
        obj = _valid_obj(rng)
        padded = _maybe(rng, lambda: np.pad(obj, N // 2)[None, :, :, None])
        offsets = _maybe(rng, lambda: rng.uniform(0, 10, (4, 1, 2, 1)).astype(np.float32))
        B, c = _maybe(rng, lambda: 1), _maybe(rng, lambda: 4)
        out = raw_data._get_image_patches_batched(padded, offsets, _maybe(rng, lambda: N), B, c)
        return out, (padded, offsets)

    def reassemble(rng):
        N = int(rng.choice(SIZES))
        patches = _maybe(rng, lambda: _valid_obj(rng)[:1, :1][None] + np.zeros((3, N, N, 1)))
        pos = _maybe(rng, lambda: _valid_positions(rng, 3))
        shape = _maybe(rng, lambda: (int(rng.choice(SIDES)), int(rng.choice(SIDES))))
        return reassemble_patches(patches, pos, shape, bool(rng.random() < 0.5)), (patches, pos)

    def dataset(rng):
        obj = _maybe(rng, lambda: _valid_obj(rng))
        pos = _maybe(rng, lambda: _valid_positions(rng, 5))
        ds = patch_dataset(
            obj,
            pos,
            _maybe(rng, lambda: 2),
            _maybe(rng, lambda: 2),
            targets=_maybe(rng, lambda: None, 0.8),
        )
        return next(iter(ds)), (obj, pos)

    def learnable(rng):
        shape = _maybe(rng, lambda: (int(rng.choice(SIDES)), int(rng.choice(SIDES))))
        made = LearnableObject(
            shape, _maybe(rng, lambda: 2), initial=_maybe(rng, lambda: None, 0.7)
        )
        pos = _maybe(rng, lambda: _valid_positions(rng, 3))
        return made(pos), (pos,)

    def grouping(rng):
        x = _maybe(rng, lambda: rng.uniform(0, 100, 30))
        y = _maybe(rng, lambda: rng.uniform(0, 100, 30))
        gs = _maybe(rng, lambda: int(rng.integers(1, 4)))
        groups = group_positions(x, y, gs, _maybe(rng, lambda: None), _maybe(rng, lambda: 5))
        return groups.positions, (x, y)

    def npz_file(rng):
        keys = ["objectGuess", "probeGuess", "xcoords", "ycoords", "diffraction", "diff3d"]
        keys += ["Y", "scan_index", "other"]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "data.npz"
            choice = rng.integers(4)
            if choice == 0:  # random bytes
                path.write_bytes(rng.bytes(int(rng.integers(0, 3000))))
            else:  # keys with wrong shapes, dtypes and values; strings; pickled objects
                arrays = {}
                for key in rng.choice(keys, size=int(rng.integers(1, 7)), replace=False):
                    kind = rng.choice(["array", "array", "array", "string", "object"])
                    if kind == "string":
                        arrays[key] = np.array(["a", "bc"])
                    elif kind == "object":
                        arrays[key] = np.array([{"a": 1}, None], dtype=object)
                    else:
                        arrays[key] = _value(rng, "array")
                np.savez(path, **arrays)
                if choice == 3:  # truncated
                    content = path.read_bytes()
                    path.write_bytes(content[: int(rng.integers(0, len(content) + 1))])
            return load_dataset(path), ()

    def command_line(rng):
        from ptycho import cli

        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            dataset = folder / "in.npz"
            choice = rng.integers(3)
            if choice == 0:
                dataset.write_bytes(rng.bytes(int(rng.integers(0, 2000))))
            else:
                n = 12
                arrays = {
                    "objectGuess": _maybe(rng, lambda: _valid_obj(rng).astype(np.complex64), 0.8),
                    "xcoords": _maybe(rng, lambda: rng.uniform(0, 16, n), 0.8),
                    "ycoords": _maybe(rng, lambda: rng.uniform(0, 16, n), 0.8),
                }
                arrays = {k: np.asarray(v) for k, v in arrays.items() if isinstance(v, np.ndarray)}
                np.savez(dataset, **arrays)
            argv = ["extract", str(dataset), "-o", str(folder / "out.npz")]
            extra = {
                "--N": str(rng.choice(["2", "0", "-1", "x", "3", "200000"])),
                "--gridsize": str(rng.choice(["1", "2", "0", "9"])),
                "--groups": str(rng.choice(["5", "0", "100"])),
                "--neighbors": str(rng.choice(["4", "1"])),
                "--bogus": "1",
            }
            for key in rng.choice(list(extra), size=int(rng.integers(0, 4)), replace=False):
                argv += [key, extra[key]]
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                status = cli.main(argv)
            text = err.getvalue()
            if status not in (0, 2) or "Traceback" in text:
                raise AssertionError(f"status {status}: {text!r}")
            # Exit 2: one error line, after the geometry warnings (one line each), if any.
            lines = text.strip().splitlines()
            errors = [line for line in lines if line.startswith("ptycho-patches: error: ")]
            warnings = [line for line in lines if line.startswith("ptycho-patches: warning: ")]
            if status == 2 and (len(errors) != 1 or len(errors) + len(warnings) != len(lines)):
                raise AssertionError(f"not one line: {text!r}")
            if status == 2 and (folder / "out.npz").exists():
                raise AssertionError("an output was left behind after an error")
            leftovers = [p.name for p in folder.iterdir() if p.name not in ("in.npz", "out.npz")]
            if leftovers:
                raise AssertionError(f"temporary files left behind: {leftovers}")
            return status, ()

    del tf
    return {
        "extract_patches": extract,
        "PatchExtractionLayer": layer,
        "translate": translate,
        "pad": pad,
        "get_image_patches": get_image_patches,
        "_get_image_patches_batched": batched,
        "reassemble_patches": reassemble,
        "patch_dataset": dataset,
        "LearnableObject": learnable,
        "group_positions": grouping,
        "load_dataset": npz_file,
        "ptycho-patches": command_line,
    }


def _hostile_targets(folder: Path) -> dict:
    """The self-checking targets of `fuzz_hostile`, sharing one small dataset file."""
    import fuzz_hostile

    from ptycho import _memory
    from ptycho.data import DataError, load_dataset, save_npz
    from ptycho.demo import demo_dataset

    dataset = folder / "scan.npz"
    save_npz(dataset, demo_dataset(size=96, N=16, count=100, seed=2))

    @contextlib.contextmanager
    def available_memory(limit):
        original = _memory.available_memory
        if limit is not None:
            _memory.available_memory = lambda: limit
        try:
            yield
        finally:
            _memory.available_memory = original

    return {
        "hostile npz members": lambda rng: fuzz_hostile.npz_members(
            rng, load_dataset, DataError, available_memory
        ),
        "hostile special paths": lambda rng: fuzz_hostile.special_paths(rng, dataset),
        "hostile signals": lambda rng: fuzz_hostile.signals(rng, dataset),
        "hostile extreme values": fuzz_hostile.extreme_values,
        "hostile graph NaN": fuzz_hostile.graph_nan,
    }


def _finite(value) -> bool:
    try:
        array = np.asarray(value)
    except Exception:
        return True
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())


def run(cases: int = 10_000, seed: int = 0) -> dict:
    """Run `cases` fuzz cases; return outcome counts and the failures found."""
    import logging

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    targets = _targets()
    folder = tempfile.TemporaryDirectory()
    hostile = _hostile_targets(Path(folder.name))
    names = sorted(targets) + sorted(hostile)
    outcomes: dict = collections.defaultdict(collections.Counter)
    failures = []
    for case in range(cases):
        name = names[case % len(names)]
        case_rng = np.random.default_rng([seed, case])
        if name in hostile:  # these check their own outcome
            try:
                outcomes[name][hostile[name](case_rng)] += 1
            except Exception as err:
                outcomes[name]["failure"] += 1
                failures.append(
                    (
                        name,
                        case,
                        f"{type(err).__name__}: {err}"[:300],
                        traceback.format_exc()[-1500:],
                    )
                )
            continue
        try:
            result, inputs = targets[name](case_rng)
            if name == "ptycho-patches":
                outcomes[name][f"exit {result}"] += 1
                continue
            if name == "group_positions" or name == "load_dataset":
                outcomes[name]["result"] += 1
                continue
            if result is not None and all(_finite(i) for i in inputs) and not _finite(result):
                raise AssertionError("NaN or inf output from finite input")
            outcomes[name]["result"] += 1
        except (ValueError, TypeError) as err:
            if not str(err).strip():
                failures.append((name, case, "empty error message", ""))
                outcomes[name]["failure"] += 1
            else:
                outcomes[name][type(err).__name__] += 1
        except Exception as err:  # anything else is a failure
            outcomes[name]["failure"] += 1
            failures.append(
                (name, case, f"{type(err).__name__}: {err}"[:300], traceback.format_exc()[-1500:])
            )
    folder.cleanup()
    return {
        "cases": cases,
        "seed": seed,
        "outcomes": {k: dict(v) for k, v in outcomes.items()},
        "failures": failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = run(args.cases, args.seed)
    total = collections.Counter()
    for name, counts in sorted(report["outcomes"].items()):
        total.update(counts)
        print(f"{name:28s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"{'all':28s} " + ", ".join(f"{k} {v}" for k, v in sorted(total.items())))
    seen = set()
    for name, case, message, trace in report["failures"]:
        key = (name, message[:60])
        if key not in seen:
            seen.add(key)
            where = [line for line in trace.splitlines() if "/ptycho/" in line][-1:]
            print(f"FAILURE {name} case {case}: {message[:200]} {where}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
