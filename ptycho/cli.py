"""`ptycho-patches`: training patches from dataset files, on the command line.

    ptycho-patches extract [DATASET.npz] -o OUT.npz [--N 64] [--gridsize 1] ...
    ptycho-patches simulate -o DATA.npz

Errors in the input, the arguments or the files print one line to stderr and exit with
status 2. Outputs are written to a temporary file beside the target and renamed into
place only when complete, so an interrupted run leaves nothing at the target.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ptycho._args import Parser, UsageError, positive, seed

__all__ = ["main"]

PROG = "ptycho-patches"
EXIT_USAGE = 2


def _key_names(text: str) -> dict:
    from ptycho.data import check_names

    names = {}
    for pair in filter(None, text.split(",")):
        key, sep, name = pair.partition("=")
        key, name = key.strip(), name.strip()
        if not sep or not key or not name:
            raise argparse.ArgumentTypeError(f"--keys takes KEY=NAME pairs. Received: {pair!r}")
        if key in names:
            raise argparse.ArgumentTypeError(f"--keys names {key!r} twice")
        names[key] = name
    try:
        return check_names(names)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--keys: {err}") from None


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Object patches from ptychography dataset files.")
    from ptycho import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    extract = commands.add_parser(
        "extract",
        help="extract training patches from a dataset file",
        description="Extract the N x N object patch at every scan position (grouped for "
        "gridsize > 1) and write a training file: Y (the patches), X (the grouped "
        "diffraction, when the dataset has it), probeGuess, global_offsets, local_offsets, "
        "nn_indices and the parameters. Without DATASET, a built-in demonstration dataset "
        "is used. The geometry is checked first: each problem is one warning line.",
    )
    extract.add_argument("dataset", nargs="?", help="NPZ file in the PtychoPINN contract")
    extract.add_argument("-o", "--output", required=True, help="output NPZ file")
    extract.add_argument("--N", type=positive("--N"), default=64, help="patch size (64)")
    extract.add_argument(
        "--gridsize",
        type=positive("--gridsize"),
        default=1,
        help="group side: gridsize**2 neighbouring positions per group (1)",
    )
    extract.add_argument(
        "--neighbors",
        type=positive("--neighbors"),
        default=4,
        help="members are drawn among this many nearest neighbours, at least gridsize**2 (4)",
    )
    extract.add_argument(
        "--groups",
        type=positive("--groups"),
        help="number of groups (default: one per position; with gridsize 1, at most that)",
    )
    extract.add_argument("--seed", type=seed("--seed"), default=0, help="grouping seed (0)")
    extract.add_argument(
        "--interpolation",
        choices=("bilinear", "nearest", "fourier"),
        default="bilinear",
        help="sub-pixel interpolation (bilinear)",
    )
    extract.add_argument(
        "--keys",
        type=_key_names,
        default={},
        metavar="KEY=NAME,...",
        help="the file's names for contract keys it stores under others, "
        "e.g. objectGuess=obj,xcoords=x,ycoords=y",
    )
    extract.add_argument(
        "--strict",
        action="store_true",
        help="stop after any geometry warning (exit status 2, nothing written)",
    )
    extract.add_argument("--preview", help="also write a PNG preview here")
    extract.add_argument("--force", action="store_true", help="overwrite existing outputs")
    extract.add_argument(
        "--memory-budget-mb",
        type=positive("--memory-budget-mb"),
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
        "far-field diffraction amplitudes computed with the layer, zero frequency at the "
        "centre as in PtychoPINN's data) in the NPZ contract.",
    )
    simulate.add_argument("-o", "--output", required=True, help="output NPZ file")
    simulate.add_argument(
        "--size", type=positive("--size"), default=392, help="object side in pixels (392)"
    )
    simulate.add_argument("--N", type=positive("--N"), default=64, help="probe size (64)")
    simulate.add_argument(
        "--count", type=positive("--count"), default=1024, help="scan positions (1024)"
    )
    simulate.add_argument("--seed", type=seed("--seed"), default=0, help="scan jitter seed (0)")
    simulate.add_argument("--force", action="store_true", help="overwrite an existing output")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    previous = {}  # the handlers to put back
    try:
        _handle_signals(previous)
        args = _parser().parse_args(argv)
        from ptycho._quiet import native_logs_hidden

        # TensorFlow's native start-up lines are hidden; `PTYCHO_TF_LOGS=1` shows them.
        with native_logs_hidden(
            clean_exceptions=(UsageError, OSError, KeyboardInterrupt, _Terminated)
        ):
            return _run(args)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # a full disk, a vanished directory, permissions
        print(f"{PROG}: error: {_describe(err)}; no partial file was left", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted by SIGINT; no partial file was left", file=sys.stderr)
        return 128 + signal.SIGINT
    except _Terminated as terminated:
        name = signal.Signals(terminated.signum).name
        print(f"{PROG}: terminated by {name}; no partial file was left", file=sys.stderr)
        return 128 + terminated.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(args) -> int:
    if args.command == "extract":
        return extract(args)
    return simulate(args)


def _describe(err: OSError) -> str:
    from ptycho._files import OVERWRITE_HINT

    where = f"{err.filename}: " if err.filename else ""
    # The library's advice names its Python argument; here it is the option.
    text = str(err.strerror or err).replace(OVERWRITE_HINT, "use --force to overwrite")
    return f"{where}{text}"


# Signals that end a run: the partial output is removed and the exit status is 128 + signum.
TERMINATING_SIGNALS = tuple(
    getattr(signal, name)
    for name in (
        "SIGINT",
        "SIGTERM",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
    )
    if hasattr(signal, name)
)


class _Terminated(BaseException):
    """A termination signal arrived: unwinds through the cleanup of the partial output."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _handle_signals(previous: dict) -> None:
    """Handle the termination signals still at their default action; the handlers they
    had are recorded in `previous`. Ignored signals (`nohup`) stay ignored, as does
    SIGXFSZ, which Python ignores so that an oversized write fails with EFBIG. SIGINT
    keeps raising KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set in the main thread
    for signum in TERMINATING_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is None:  # set outside Python: leave it
            continue
        previous[signum] = handler
        if handler in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(signum, _terminate)


def _terminate(signum, frame):
    # Further signals are ignored while the partial output is removed, so that a second
    # one cannot cut the cleanup short; `main` puts the handlers back.
    for other in TERMINATING_SIGNALS:
        if signal.getsignal(other) is _terminate:
            signal.signal(other, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise _Terminated(signum)


def _load(path, names, check=None) -> tuple[dict, dict]:
    """The dataset and the dtype of each key as stored.

    `check(layout)`, given `{key: ArrayLayout(shape, dtype, held)}` with `held` the bytes
    the array will add to the memory in use, is called before any array is read.
    """
    from ptycho.data import ArrayLayout, DataError, dataset_layout, load_dataset

    if path is None:
        if names:
            raise UsageError("--keys needs a DATASET file")
        from ptycho.demo import demo_dataset

        data = demo_dataset()
        if check is not None:  # made already: nothing more to hold
            check({key: ArrayLayout(value.shape, value.dtype, 0) for key, value in data.items()})
        return data, {key: value.dtype for key, value in data.items()}
    try:
        if check is not None:
            check(dataset_layout(path, names=names))
        data = load_dataset(path, names=names)
    except DataError as err:
        raise UsageError(str(err)) from None
    except MemoryError:  # an allocation refused although the free memory looked enough
        raise UsageError(f"{path}: not enough memory to read it") from None
    return data, data.source_dtypes


def _check_output(path, force: bool, inputs=()) -> Path:
    """Refuse before any work what `atomic_path` would refuse at the end: anything but a
    regular file (replaced only with `force`) or nothing at `path`."""
    from ptycho._files import check_target, other_writers

    path = Path(path)
    try:
        existing = check_target(path, force)
    except OSError as err:  # a link, a directory, a FIFO, a device; an existing file
        raise UsageError(_describe(err)) from None
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: no such directory")
    for source in inputs:
        if source is not None and existing is not None and Path(source).exists():
            if path.samefile(source):
                raise UsageError(f"{path}: is an input; choose another output")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"{path.parent}: not writable")
    busy = ", ".join(partial.name for partial in other_writers(path))
    if busy:
        print(f"{PROG}: warning: {path}: another run may be writing it ({busy})", file=sys.stderr)
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
    N, c, budget = args.N, args.gridsize**2, args.memory_budget_mb * 2**20

    def chunks(itemsize: int, row_bytes: int) -> tuple[int, int]:
        """Groups computed at a time, within the budget: of patches (Y), of patterns (X)."""
        return max(1, budget // (N * N * c * itemsize)), max(1, budget // max(row_bytes * c, 1))

    def check_run(layout: dict) -> None:
        """Refuse, before any array is read, a run larger than the free memory. Its peak:
        the input arrays held in memory; TensorFlow's copy of the object, its margined
        table and one chunk of patches (`request_elements`) with the chunk's NumPy copy; the
        grouping, the member positions and the sorted indices of the geometry report; and
        one chunk of X (its rows read, gathered, then made contiguous)."""
        from math import prod

        from ptycho import _kernel, grouping
        from ptycho._memory import available_memory

        obj, diffraction = layout["objectGuess"], layout.get("diffraction")
        n = layout["xcoords"].shape[0]
        itemsize = np.dtype(obj.dtype).itemsize
        row_bytes = 0 if diffraction is None else prod(diffraction.shape[1:]) * 4
        step, x_step = chunks(itemsize, row_bytes)
        count = n if args.groups is None else min(args.groups, n) if c == 1 else args.groups
        patches = min(step, count) * c
        held = sum(array.held for array in layout.values())
        need = (
            held
            + prod(obj.shape) * itemsize
            + _kernel.request_elements(obj.shape, 1, patches, N, args.interpolation) * itemsize
            + patches * N * N * itemsize
            + grouping.grouping_bytes(n, args.gridsize, args.groups, args.neighbors)
            + count * c * (2 * 4 + 2 * 8)
            + 3 * min(x_step, count) * c * row_bytes
        )
        available = available_memory()
        if available is not None and need > available:
            what = f"extracting {count} groups of {c} patch{'es' if c > 1 else ''} of {N} x {N}"
            if held >= 2**30 / 10:
                what += f" with its {held / 2**30:.1f} GiB of input arrays"
            raise UsageError(
                f"{what} would need {need / 2**30:.1f} GiB, more than the "
                f"{available / 2**30:.1f} GiB of memory available"
            )

    data, source_dtypes = _load(args.dataset, args.keys, check_run)
    obj, diffraction = data["objectGuess"], data.get("diffraction")

    from ptycho import grouping
    from ptycho.data import DataError, read_rows

    try:
        groups = grouping.group_positions(
            data["xcoords"], data["ycoords"], args.gridsize, args.groups, args.neighbors, args.seed
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    problems = _report_geometry(data, source_dtypes, np.unique(groups.nn_indices), args)
    if problems and args.strict:
        raise UsageError(
            f"--strict: {len(problems)} geometry warning(s) above; nothing was written"
        )
    count = len(groups.nn_indices)
    parameters = {
        "dataset": str(args.dataset) if args.dataset else "built-in demonstration dataset",
        "N": N,
        "gridsize": args.gridsize,
        # the number used: at least c, at most the number of positions
        "neighbors": min(max(args.neighbors, c), len(data["xcoords"])),
        "groups": count,
        "seed": args.seed,
        "interpolation": args.interpolation,
    }
    shape = (count, N, N, c)
    group_bytes = N * N * c * np.dtype(obj.dtype).itemsize
    row_bytes = 0 if diffraction is None else int(np.prod(diffraction.shape[1:])) * 4
    step, x_step = chunks(np.dtype(obj.dtype).itemsize, row_bytes)
    x_shape = None if diffraction is None else (count, *diffraction.shape[1:], c)
    x_bytes = count * c * row_bytes
    progress = _progress(count, args.progress)

    start = time.perf_counter()
    import tensorflow as tf

    from ptycho import _kernel, ops
    from ptycho._files import atomic_path
    from ptycho._memory import check_memory
    from ptycho._npz import NpzWriter

    chunk = _kernel.request_elements(obj.shape, 1, min(step, count) * c, N, args.interpolation)
    try:
        check_memory(
            chunk * np.dtype(obj.dtype).itemsize,
            f"patches of {N} x {N}",
            "Ask for less at a time: `ptycho.patch_dataset` and `ptycho-patches extract` "
            "stream patches in batches.",
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    free = shutil.disk_usage(output.parent).free
    need = count * group_bytes + x_bytes
    if need > free:
        raise UsageError(
            f"{output}: the training file needs {need / 2**30:.1f} GiB of disk, "
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
            if diffraction is not None:
                # X[g, :, :, k] is the pattern of member k of group g, as Y's channels.
                with writer.stream("X", x_shape, np.float32) as write:
                    for first in range(0, count, x_step):
                        members = groups.nn_indices[first : first + x_step]
                        try:  # file reads, not the memory map: a shrunk file is no SIGBUS
                            rows = read_rows(diffraction, members)
                        except DataError as err:
                            raise UsageError(str(err)) from None
                        write(np.moveaxis(rows, 1, -1))
            if "probeGuess" in data:
                writer.add("probeGuess", data["probeGuess"])
            writer.add("global_offsets", groups.global_offsets)
            writer.add("local_offsets", groups.local_offsets)
            writer.add("nn_indices", groups.nn_indices)
            for key, value in parameters.items():
                writer.add(key, np.array(value))
    elapsed = time.perf_counter() - start
    size = output.stat().st_size
    written = f"Y {shape} {obj.dtype.name}"
    if x_shape is not None:
        written += f", X {x_shape} float32"
    print(f"wrote {output}: {written} ({size / 2**20:.1f} MiB) in {elapsed:.2f} s")
    if preview is not None:
        from ptycho.preview import write_preview

        with atomic_path(preview, args.force) as temporary:
            write_preview(temporary, obj.numpy(), groups, output, N)
        print(f"wrote {preview}")
    return 0


def _report_geometry(data: dict, source_dtypes: dict, used, args) -> list[str]:
    """Print one warning line per geometry problem of the scan positions `used`."""
    from ptycho.geometry import scan_warnings

    diffraction, probe = data.get("diffraction"), data.get("probeGuess")
    messages = scan_warnings(
        data["objectGuess"].shape,
        data["xcoords"][used],
        data["ycoords"][used],
        args.N,
        gridsize=args.gridsize,
        neighbors=args.neighbors,
        scan_count=len(data["xcoords"]),
        interpolation=args.interpolation,
        object_dtype=source_dtypes["objectGuess"],
        probe_shape=None if probe is None else probe.shape,
        diffraction_shape=None if diffraction is None else diffraction.shape,
    )
    for message in messages:
        print(f"{PROG}: warning: {message}", file=sys.stderr)
    return messages


def simulate(args) -> int:
    output = _check_output(args.output, args.force)
    from ptycho.data import save_npz
    from ptycho.demo import demo_dataset

    if args.N > args.size:
        raise UsageError(f"--N {args.N} is larger than the object (--size {args.size})")
    from ptycho._memory import available_memory
    from ptycho.demo import demo_bytes

    need, available = demo_bytes(args.size, args.N, args.count), available_memory()
    if available is not None and need > available:
        raise UsageError(
            f"--size {args.size}, --N {args.N} and --count {args.count} would need "
            f"{need / 2**30:.1f} GiB of memory, more than the {available / 2**30:.1f} GiB "
            "available; choose a smaller --size or --count"
        )
    data = demo_dataset(args.size, args.N, args.count, args.seed)
    save_npz(output, data, force=args.force)
    print(f"wrote {output}: {args.count} positions, object {args.size}x{args.size}, N={args.N}")
    return 0


def _progress(total: int, wanted):
    if sys.stderr is None:  # started with stderr closed
        return None
    show = sys.stderr.isatty() if wanted is None else wanted
    return _Progress(total) if show else None


class _Progress:
    """A one-line progress bar on stderr.

    Not `keras.utils.Progbar`: that writes only to `sys.stdout` (or to absl logging, by
    Keras's global interactive-logging switch), which here holds the results, and it
    writes colour escapes even to a file.
    """

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
