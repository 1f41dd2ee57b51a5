"""`python benchmarks/run.py`: every patch-extraction method side by side.

All methods run in one process on the same object and positions:

* (a) `loop`: the legacy per-patch loop, `_get_image_patches_iterative`. Timed on a subset
  and extrapolated when the subset is smaller than the request (labelled as such).
* (b) `naive`: the plan from the original refactoring checklist, the padded object repeated
  `B * c` times and one `translate` call. Skipped with its estimated size when it exceeds
  the memory budget.
* (c) `naive_chunked`: the same plan in chunks of 256 patches.
* (d) `batched` (`_get_image_patches_batched`) and `get_image_patches`.
* (e) `layer_eager` (`PatchExtractionLayer` called eagerly) and `layer_jit` (inside a
  `tf.function(jit_compile=True)`).
* (f) `crop_and_resize`: `tf.image.crop_and_resize` on stacked real and imaginary channels,
  the closest stock TensorFlow op.
* (g) `copy`: `numpy.copyto` of an array the size of the output into a freshly allocated
  destination, the memory-bandwidth floor of any extractor (`copy_warm` reuses the
  destination, for reference).

For each method: best time of several runs after a warm-up, patches/s, megapixels/s, the
speedup over (a), the fraction of (g)'s throughput, and the peak extra resident memory
measured in a child process per method. The engine checks (compilation, gradients,
linear scaling, memory at P = 65,536) follow the table, and every figure with a target in
`TARGETS` gets PASS, SHORT or SKIPPED (with the reason). Progress goes to stderr as the
run goes; `--quick` is a first look in under 30 s. Results go to stdout, a JSON file and
PNG plots (plots need matplotlib: `pip install -e ".[bench]"`).

Run it from a checkout: the `benchmarks` folder is not part of the installed package.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if not __package__:  # run as a script: import `benchmarks` (and `ptycho`) from this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measure import (
    child_memory,
    device_name,
    engine_checks,
    keep_freed_memory,
    ms,
    run_sweep,
    run_table,
)
from benchmarks.methods import METHODS, Case
from benchmarks.plots import plot
from benchmarks.targets import headline_figures, verdicts
from ptycho._args import Parser, UsageError, positive

__all__ = ["main"]

PROG = "python benchmarks/run.py"
# `--quick`: a first look in well under 30 s on the 2-core reference machine.
QUICK = {"groups": 256, "repeats": 2, "loop_patches": 8}
DEFAULTS = {"groups": 1024, "repeats": 5, "loop_patches": 32}


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--size", type=positive("--size"), default=512, help="object side (512)")
    add("--N", type=positive("--N"), default=64, help="patch size (64)")
    add("--gridsize", type=positive("--gridsize"), default=2, help="group side (2)")
    add("--groups", type=positive("--groups"), help="groups B (1024; 256 with --quick)")
    add("--repeats", type=positive("--repeats"), help="timed runs per method (5; 2 with --quick)")
    add(
        "--loop-patches",
        type=positive("--loop-patches"),
        help="patches the loop times (32; 8 with --quick)",
    )
    add("--memory-budget-gb", type=float, default=4.0, help="skip plans above this")
    add(
        "--scaling-groups",
        type=positive("--scaling-groups"),
        default=16384,
        help="B of the large case",
    )
    add("--no-memory", action="store_true", help="skip child-process memory")
    add("--no-scaling", action="store_true", help="skip the large-P checks")
    add("--no-checks", action="store_true", help="skip the engine checks")
    first_look = parser.add_mutually_exclusive_group()
    first_look.add_argument("--sweep", action="store_true", help="also sweep P and N")
    first_look.add_argument(
        "--quick",
        action="store_true",
        help="a first look in under 30 s: 1,024 patches, 2 repeats, without the naive plans, "
        "memory and large-P checks",
    )
    add(
        "--keep-freed-memory",
        action="store_true",
        help="tune glibc to reuse freed large blocks (see keep_freed_memory)",
    )
    add("--out", type=Path, default=Path("benchmark-results"), help="output folder")
    add("--child-memory", choices=METHODS, help=argparse.SUPPRESS)
    return parser


def _parse(argv) -> argparse.Namespace:
    """The arguments, with the defaults that depend on `--quick` filled in."""
    args = _parser().parse_args(argv)
    defaults = DEFAULTS
    if args.quick:
        defaults = {**DEFAULTS, **QUICK}
        args.no_memory = args.no_scaling = True
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(argv)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    if args.child_memory:
        if args.keep_freed_memory:
            keep_freed_memory()
        case = Case(args.size, args.N, args.gridsize, args.groups)
        print(child_memory(args.child_memory, case, args.loop_patches))
        return 0
    from ptycho._quiet import native_logs_hidden

    # TensorFlow's native start-up lines are hidden; `PTYCHO_TF_LOGS=1` shows them. Ctrl-C
    # is a clean end: no replay of the hidden lines after it.
    try:
        with native_logs_hidden(clean_exceptions=(KeyboardInterrupt,)):
            return _run(args)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)  # may end a progress line
        return 128 + signal.SIGINT


def _run(args) -> int:
    case = Case(args.size, args.N, args.gridsize, args.groups)
    if args.keep_freed_memory:
        # From here on the flag says whether the allocator was tuned; the memory children
        # are tuned the same way.
        args.keep_freed_memory = keep_freed_memory()
    allocator = "glibc keeps freed memory" if args.keep_freed_memory else "glibc default"
    device = device_name()
    rows = run_table(case, args)
    print_table(case, rows, f"{device}; allocator: {allocator}")
    checks = {} if args.no_checks else engine_checks(case, args)
    results = verdicts({**headline_figures(rows), **checks}, skipped_stages(args))
    print_verdicts(results, checks)
    sweep = run_sweep(args) if args.sweep else []
    args.out.mkdir(parents=True, exist_ok=True)
    plots = plot(rows, sweep, case, args.out)
    result = {
        "device": device,
        "allocator": allocator,
        "quick": args.quick,
        "case": {**case.__dict__, "patches": case.patches, "output_bytes": case.output_bytes},
        "methods": rows,
        "checks": checks,
        "verdicts": results,
        "sweep": sweep,
        "plots": plots,
        "python": platform.python_version(),
    }
    path = args.out / "benchmark.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {path}" + "".join(f", {p}" for p in plots))
    return 0


def skipped_stages(args) -> dict[str, str]:
    """The stages of the engine checks that `args` leave out, with the reason."""
    if args.no_checks:
        return {"checks": "skipped with --no-checks", "scaling": "skipped with --no-checks"}
    if args.no_scaling:
        return {"scaling": "skipped with --quick" if args.quick else "skipped with --no-scaling"}
    return {}


def print_table(case: Case, rows: list[dict], device: str) -> None:
    print(
        f"\n{case.patches} patches of {case.N}x{case.N} from a {case.size}x{case.size} complex64 "
        f"object (gridsize {case.gridsize}, B={case.groups}); output "
        f"{case.output_bytes / 2**20:.0f} MiB; device: {device}"
    )
    head = f"{'method':<18}{'time':>11}{'patches/s':>12}{'Mpx/s':>9}{'vs loop':>10}"
    print(head + f"{'of copy':>9}{'extra mem':>11}  note")
    for row in rows:
        if "seconds" not in row:
            print(
                f"{row['method']:<18}{'-':>11}{'':>12}{'':>9}{'':>10}{'':>9}{'':>11}  {row['note']}"
            )
            continue
        extra = row.get("extra_bytes")
        mem = "-" if extra is None else f"{extra / 2**20:.0f} MiB"
        print(
            f"{row['method']:<18}{ms(row['seconds']):>11}{row['patches_per_s']:>12.3g}"
            f"{row['mpx_per_s']:>9.0f}{row['speedup_vs_loop']:>9.0f}x"
            f"{row['fraction_of_copy']:>9.2f}{mem:>11}  {row['note']}"
        )


def print_verdicts(results: list[dict], checks: dict) -> None:
    print("\ntargets (from the performance issue)")
    for result in results:
        value = result.get("reason") or f"{result['value']:.3g}"
        print(f"  {result['verdict']:<7} {result['label']}: {value} (target {result['target']})")
    if "forward_s" in checks:
        print(
            f"  (jitted forward {ms(checks['forward_s'])}, forward+backward "
            f"{ms(checks['forward_backward_s'])}; object gradient only "
            f"{checks['backward_ratio_object_only']:.2f}x)"
        )


if __name__ == "__main__":
    sys.exit(main())
