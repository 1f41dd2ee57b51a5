"""Measuring: the timed table, child-process memory from /proc, the engine checks, the sweep
and the machine's description."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.methods import (
    METHODS,
    QUICK_SKIPS,
    SINGLE_RUN,
    Case,
    Unavailable,
    build,
    make_inputs,
    naive_bytes,
)
from ptycho._timing import best_time, wait

__all__ = [
    "child_memory",
    "device_name",
    "engine_checks",
    "keep_freed_memory",
    "measure_memory",
    "ms",
    "progress",
    "run_sweep",
    "run_table",
]

RUN = Path(__file__).resolve().with_name("run.py")  # the entry point, run for a memory child
SWEEP_P = (256, 1024, 4096, 16384, 65536, 262144)
SWEEP_N = (32, 64, 128, 256)
SWEEP_METHODS = ("layer_eager", "layer_jit", "crop_and_resize", "copy")


def progress(message: str, end: str = "\n") -> None:
    """Progress on stderr, so that a long run shows it is alive."""
    print(message, file=sys.stderr, end=end, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _rss(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def child_memory(method: str, case: Case, loop_patches: int) -> int:
    """In this process: the peak resident memory added by one call of `method`, or -1 where
    the peak cannot be reset."""
    run = build(method, case, loop_patches).run
    import gc

    gc.collect()
    try:  # reset the peak (VmHWM) to the current resident size
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return -1  # the peak cannot be reset: no honest figure
    base = _rss("VmRSS:")
    result = run()
    wait(result)
    return max(0, _rss("VmHWM:") - base)


def measure_memory(
    method: str, case: Case, loop_patches: int, keep_freed: bool = False
) -> int | None:
    """Peak extra resident bytes of one call, measured in a fresh child process, whose
    allocator keeps freed memory when `keep_freed` says this one's does."""
    if not os.path.exists("/proc/self/status"):
        return None
    args = [sys.executable, str(RUN), "--child-memory", method]
    args += [f"--size={case.size}", f"--N={case.N}", f"--gridsize={case.gridsize}"]
    args += [f"--groups={case.groups}", f"--loop-patches={loop_patches}"]
    if keep_freed:
        args.append("--keep-freed-memory")
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    extra = int(done.stdout.strip().splitlines()[-1])
    return None if extra < 0 else extra


def run_table(case: Case, args) -> list[dict]:
    """Time every method on `case`: one row each, with its throughput and ratios."""
    rows = []
    budget = int(args.memory_budget_gb * 2**30)
    for number, method in enumerate(METHODS, 1):
        row = {"method": method, "note": ""}
        progress(f"[{number}/{len(METHODS)}] {method} ...", end="")
        if args.quick and method in QUICK_SKIPS:
            row["note"] = "skipped with --quick"
        elif method == "naive" and naive_bytes(case) > budget:
            row["note"] = f"skipped: needs ~{naive_bytes(case) / 2**30:.1f} GiB > budget"
        if row["note"]:
            rows.append(row)
            progress(" skipped")
            continue
        try:
            built = build(method, case, args.loop_patches)
        except Unavailable as why:
            row["note"] = f"skipped: {why}"
            rows.append(row)
            progress(" skipped")
            continue
        repeats = 1 if method in SINGLE_RUN else args.repeats
        row["seconds"] = best_time(built.run, repeats) * built.factor
        row["note"] = built.label
        if not args.no_memory and method != "copy_warm":
            extra = measure_memory(method, case, args.loop_patches, args.keep_freed_memory)
            row["extra_bytes"] = extra
            if method == "loop" and built.factor != 1.0:
                row["note"] += "; memory of the subset"
        rows.append(row)
        progress(f" {ms(row['seconds'])}")
    by_name = {row["method"]: row for row in rows if "seconds" in row}
    for row in rows:
        if "seconds" not in row:
            continue
        row["patches_per_s"] = case.patches / row["seconds"]
        row["mpx_per_s"] = case.patches * case.N**2 / row["seconds"] / 1e6
        row["speedup_vs_loop"] = by_name["loop"]["seconds"] / row["seconds"]
        row["fraction_of_copy"] = by_name["copy"]["seconds"] / row["seconds"]
    return rows


def engine_checks(case: Case, args) -> dict:
    """The figures the engine is held to, beyond the table."""
    import tensorflow as tf

    from ptycho.demo import demo_object
    from ptycho.layers import PatchExtractionLayer

    checks: dict = {}
    obj, positions, _ = make_inputs(case)
    obj_t, pos_t = tf.constant(obj), tf.constant(positions)

    progress("engine checks: compilation at a new object size and new counts")
    fresh = tf.constant(demo_object(case.size - 12))
    layer = PatchExtractionLayer(case.N)
    # Every call here is waited for as `best_time` waits for the warm ones (one element
    # copied out): a `.numpy()` of the whole output would charge a copy to the first calls.
    start = time.perf_counter()
    wait(layer(fresh, pos_t))
    first = time.perf_counter() - start
    warm = best_time(lambda: layer(fresh, pos_t), args.repeats)
    # Each count is new, so each call is a first call at its count; one call is noisy on a
    # shared machine, so five counts are timed and the median is the figure.
    counts = [max(1, case.groups * 125 // 128 - k) for k in range(5)]  # 4,000 after 4,096
    ratios = []
    for count in counts:
        start = time.perf_counter()
        wait(layer(fresh, pos_t[:count]))
        ratios.append((time.perf_counter() - start) / warm)
    checks["first_call_extra_s"] = first - warm
    checks["new_count_call_over_warm"] = float(sorted(ratios)[len(ratios) // 2])
    checks["new_count_calls_over_warm"] = ratios
    checks["new_count_patches"] = counts[0] * case.c

    progress("engine checks: jitted forward against forward plus backward")
    obj_var = tf.Variable(obj_t)
    pos_var = tf.Variable(pos_t)

    @tf.function(jit_compile=True)
    def forward():
        return tf.reduce_sum(tf.abs(layer(obj_var, pos_var)) ** 2)

    @tf.function(jit_compile=True)
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.abs(layer(obj_var, pos_var)) ** 2)
        return loss, tape.gradient(loss, [obj_var, pos_var])

    @tf.function(jit_compile=True)
    def forward_backward_object():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.abs(layer(obj_var, pos_var)) ** 2)
        return loss, tape.gradient(loss, obj_var)

    t_forward = best_time(forward, args.repeats)
    t_both = best_time(lambda: forward_backward()[0], args.repeats)
    t_object = best_time(lambda: forward_backward_object()[0], args.repeats)
    checks["forward_s"] = t_forward
    checks["forward_backward_s"] = t_both
    checks["backward_ratio"] = t_both / t_forward
    checks["forward_backward_object_only_s"] = t_object
    checks["backward_ratio_object_only"] = t_object / t_forward

    # Linear scaling and memory at a large P (eager layer).
    if not args.no_scaling:
        progress(f"engine checks: {args.scaling_groups * case.c} patches, time and memory")
        big = Case(case.size, case.N, case.gridsize, args.scaling_groups)
        big_obj, big_pos, _ = make_inputs(big)
        big_layer = PatchExtractionLayer(big.N)
        big_time = best_time(lambda: big_layer(big_obj, big_pos), 2)
        small_time = best_time(lambda: layer(obj_t, pos_t), args.repeats)
        checks["scaling_patches"] = big.patches
        checks["scaling_per_patch_ratio"] = (big_time / big.patches) / (small_time / case.patches)
        checks["scaling_layer_eager_s"] = big_time
        # The eager layer against the jitted one, a fresh-destination copy and JAX there too.
        for method in ("layer_jit", "copy", "jax_vmap"):
            try:
                seconds = best_time(build(method, big, args.loop_patches).run, 2)
            except Unavailable:
                continue
            checks[f"scaling_{method}_s"] = seconds
        if "scaling_layer_jit_s" in checks:
            checks["scaling_eager_over_jit"] = big_time / checks["scaling_layer_jit_s"]
        checks["scaling_fraction_of_copy"] = checks["scaling_copy_s"] / big_time
        if "scaling_jax_vmap_s" in checks:
            checks["scaling_speedup_vs_jax"] = checks["scaling_jax_vmap_s"] / big_time
        checks["scaling_output_bytes"] = big.output_bytes
        for method in ("layer_eager", "get_image_patches"):
            extra = measure_memory(method, big, args.loop_patches, args.keep_freed_memory)
            checks[f"scaling_extra_bytes_{method}"] = extra
            if extra is not None:
                checks[f"scaling_memory_ratio_{method}"] = (extra - 100e6) / big.output_bytes
        del big_obj, big_pos
    checks["device"] = device_name()
    return checks


def run_sweep(args) -> list[dict]:
    """Time the fast methods over P and N (and the loop on a few patches per N)."""
    rows = []
    budget = int(args.memory_budget_gb * 2**30)
    for N in SWEEP_N:
        for P in SWEEP_P:
            case = Case(args.size, N, 1, P)
            if 2 * case.output_bytes > budget:
                print(f"sweep N={N} P={P}: skipped, {case.output_bytes / 2**30:.1f} GiB output")
                continue
            for method in SWEEP_METHODS:
                seconds = best_time(build(method, case).run, 2 if P >= 65536 else args.repeats)
                rows.append({"N": N, "P": P, "method": method, "seconds": seconds})
                print(f"sweep N={N:<4} P={P:<7} {method:<16} {ms(seconds)}", flush=True)
            loop = build("loop", case, 4)
            seconds = best_time(loop.run, 1) * loop.factor
            rows.append({"N": N, "P": P, "method": "loop (extrapolated)", "seconds": seconds})
    return rows


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}"
    model = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    return f"CPU: {model}, {os.cpu_count()} cores"


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed large blocks in its heap instead of returning them.

    By default glibc maps every block above 32 MiB afresh and unmaps it on free, so each
    new output is faulted in page by page: for a 128 MiB output that costs more than the
    extraction itself. With this setting a repeated large allocation reuses memory that is
    already mapped. It changes the whole process, so the benchmark applies it only with
    `--keep-freed-memory`, to show the effect; it is not a library default.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(
        libc.mallopt(m_trim_threshold, 2**31 - 1)
    )
