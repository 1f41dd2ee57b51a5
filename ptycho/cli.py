"""`ptycho-patches`: training patches from dataset files, on the command line.

    ptycho-patches extract [DATASET.npz] -o OUT.npz [--N 64] [--gridsize 1] ...
    ptycho-patches simulate -o DATA.npz
    ptycho-patches benchmark [options of python -m ptycho.benchmark]

Errors in the input, the arguments or the files print one line to stderr and exit with
status 2. Outputs are written to a temporary file beside the target and renamed into
place only when complete, so an interrupted run leaves nothing at the target.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

PROG = "ptycho-patches"
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the input, the arguments or the files: one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def _positive(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} must be an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"--{name} must be >= 1, got {value}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Object patches from ptychography dataset files.")
    from ptycho import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    extract = commands.add_parser(
        "extract",
        help="extract training patches from a dataset file",
        description="Extract the N x N object patch at every scan position (grouped for "
        "gridsize > 1) and write Y, global_offsets, local_offsets, nn_indices and the "
        "parameters to an NPZ file. Without DATASET, a built-in demonstration dataset "
        "is used.",
    )
    extract.add_argument("dataset", nargs="?", help="NPZ file in the PtychoPINN contract")
    extract.add_argument("-o", "--output", required=True, help="output NPZ file")
    extract.add_argument("--N", type=_positive("N"), default=64, help="patch size (64)")
    extract.add_argument(
        "--gridsize",
        type=_positive("gridsize"),
        default=1,
        help="group side: gridsize**2 neighbouring positions per group (1)",
    )
    extract.add_argument(
        "--neighbors",
        type=_positive("neighbors"),
        default=4,
        help="members are drawn among this many nearest neighbours, at least gridsize**2 (4)",
    )
    extract.add_argument(
        "--groups",
        type=_positive("groups"),
        help="number of groups (default: one per position; with gridsize 1, at most that)",
    )
    extract.add_argument("--seed", type=int, default=0, help="grouping seed (0)")
    extract.add_argument(
        "--interpolation",
        choices=("bilinear", "nearest", "fourier"),
        default="bilinear",
        help="sub-pixel interpolation (bilinear)",
    )
    extract.add_argument("--preview", help="also write a PNG preview here")
    extract.add_argument("--force", action="store_true", help="overwrite existing outputs")
    extract.add_argument(
        "--memory-budget-mb",
        type=_positive("memory-budget-mb"),
        default=64,
        help="MiB of patches computed at a time; larger outputs stream to disk (64)",
    )
    extract.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )

    simulate = commands.add_parser(
        "simulate",
        help="write a simulated dataset",
        description="Write the built-in demonstration dataset (object, probe, scan, and "
        "far-field diffraction amplitudes computed with the layer) in the NPZ contract.",
    )
    simulate.add_argument("-o", "--output", required=True, help="output NPZ file")
    simulate.add_argument(
        "--size", type=_positive("size"), default=392, help="object side in pixels (392)"
    )
    simulate.add_argument("--N", type=_positive("N"), default=64, help="probe size (64)")
    simulate.add_argument(
        "--count", type=_positive("count"), default=1024, help="scan positions (1024)"
    )
    simulate.add_argument("--seed", type=int, default=0, help="scan jitter seed (0)")
    simulate.add_argument("--force", action="store_true", help="overwrite an existing output")

    commands.add_parser(
        "benchmark",
        help="run the benchmark (options of python -m ptycho.benchmark)",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if argv[:1] == ["benchmark"]:
        from ptycho import benchmark

        return benchmark.main(argv[1:])
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        args = _parser().parse_args(argv)
        with _native_logs_hidden():
            return _run(args)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # a full disk, a vanished directory, permissions
        print(f"{PROG}: error: {_describe(err)}; no partial file was left", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no partial file was left", file=sys.stderr)
        return 128 + signal.SIGINT
    except _Terminated:
        print(f"{PROG}: terminated; no partial file was left", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    if args.command == "extract":
        return extract(args)
    return simulate(args)


@contextlib.contextmanager
def _native_logs_hidden():
    """Send TensorFlow's native log lines (CUDA probing, XLA notices) to /dev/null.

    They are written straight to file descriptor 2, so Python cannot filter them. The
    command's own messages go to the original stderr through `sys.stderr`. Set
    `PTYCHO_TF_LOGS=1` to see TensorFlow's lines; nothing changes when stderr is not the
    process's own (for example under pytest's capture).
    """
    try:
        own = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        own = False
    if not own or os.environ.get("PTYCHO_TF_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    original = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = original
        os.dup2(saved, 2)
        os.close(saved)


def _describe(err: OSError) -> str:
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}"


class _Terminated(BaseException):
    pass


def _terminate(signum, frame):
    raise _Terminated


def _load(path) -> dict:
    from ptycho.data import DataError, load_dataset

    if path is None:
        from ptycho.demo import demo_dataset

        return demo_dataset()
    try:
        return load_dataset(path)
    except DataError as err:
        raise UsageError(str(err)) from None


def _check_output(path, force: bool, inputs=()) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path}: is a directory")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: no such directory")
    if path.exists() and not force:
        raise UsageError(f"{path}: already exists (use --force to overwrite)")
    for source in inputs:
        if source is not None and Path(source).exists() and path.exists():
            if path.samefile(source):
                raise UsageError(f"{path}: is an input; choose another output")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"{path.parent}: not writable")
    return path


def extract(args) -> int:
    output = _check_output(args.output, args.force, [args.dataset])
    preview = None
    if args.preview:
        preview = _check_output(args.preview, args.force, [args.dataset])
        if preview.resolve() == output.resolve():
            raise UsageError(f"{preview}: the preview and the output must be different files")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--preview needs matplotlib: pip install matplotlib") from None
    data = _load(args.dataset)

    from ptycho import grouping

    try:
        groups = grouping.group_positions(
            data["xcoords"], data["ycoords"], args.gridsize, args.groups, args.neighbors, args.seed
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    obj = data["objectGuess"]
    count, c, N = len(groups.nn_indices), args.gridsize**2, args.N
    parameters = {
        "dataset": str(args.dataset) if args.dataset else "built-in demonstration dataset",
        "N": N,
        "gridsize": args.gridsize,
        "neighbors": max(args.neighbors, args.gridsize**2),  # the number used
        "groups": count,
        "seed": args.seed,
        "interpolation": args.interpolation,
    }
    shape = (count, N, N, c)
    group_bytes = N * N * c * np.dtype(obj.dtype).itemsize
    step = max(1, args.memory_budget_mb * 2**20 // group_bytes)
    progress = _progress(count, args.progress)

    start = time.perf_counter()
    import tensorflow as tf

    from ptycho import ops
    from ptycho.data import NpzWriter, atomic_path

    chunk = ops.request_bytes(obj.shape, 1, min(step, count) * c, N, args.interpolation)
    try:
        ops.check_memory(chunk * np.dtype(obj.dtype).itemsize, f"patches of {N} x {N}")
    except ValueError as err:
        raise UsageError(str(err)) from None
    free = shutil.disk_usage(output.parent).free
    if count * group_bytes > free:
        raise UsageError(
            f"{output}: the patches need {count * group_bytes / 2**30:.1f} GiB of disk, "
            f"{free / 2**30:.1f} GiB are free there"
        )
    obj = tf.constant(obj)  # converted once, not per chunk
    positions = groups.positions
    with atomic_path(output, args.force) as temporary:
        with NpzWriter(temporary) as writer:
            with writer.stream("Y", shape, obj.dtype.as_numpy_dtype) as write:
                for first in range(0, count, step):
                    chunk = positions[first : first + step]
                    write(ops.extract_patches(obj, chunk, N, args.interpolation).numpy())
                    if progress:
                        progress.update(min(first + step, count))
            writer.add("global_offsets", groups.global_offsets)
            writer.add("local_offsets", groups.local_offsets)
            writer.add("nn_indices", groups.nn_indices)
            for key, value in parameters.items():
                writer.add(key, np.array(value))
    elapsed = time.perf_counter() - start
    size = output.stat().st_size
    print(f"wrote {output}: Y {shape} {obj.dtype.name} ({size / 2**20:.1f} MiB) in {elapsed:.2f} s")
    if preview is not None:
        from ptycho.preview import write_preview

        with atomic_path(preview, args.force) as temporary:
            write_preview(temporary, obj.numpy(), groups, output, N)
        print(f"wrote {preview}")
    return 0


def simulate(args) -> int:
    output = _check_output(args.output, args.force)
    from ptycho.data import save_npz
    from ptycho.demo import demo_dataset

    if args.N > args.size:
        raise UsageError(f"--N {args.N} is larger than the object (--size {args.size})")
    data = demo_dataset(args.size, args.N, args.count, args.seed)
    save_npz(output, data, force=args.force)
    print(f"wrote {output}: {args.count} positions, object {args.size}x{args.size}, N={args.N}")
    return 0


def _progress(total: int, wanted):
    show = sys.stderr.isatty() if wanted is None else wanted
    return _Progress(total) if show else None


class _Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, width: int = 30):
        self.total, self.width, self.start = total, width, time.perf_counter()

    def update(self, done: int) -> None:
        filled = self.width * done // self.total
        elapsed = time.perf_counter() - self.start
        bar = "#" * filled + "." * (self.width - filled)
        end = "\n" if done >= self.total else ""
        print(f"\r[{bar}] {done}/{self.total} groups, {elapsed:.1f} s", end=end, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
