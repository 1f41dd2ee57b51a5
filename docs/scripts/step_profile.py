"""The jitted training step of the benchmark, timed whole and profiled op by op.

    python docs/scripts/step_profile.py [--N 64] [--profile] [--loss abs2]

Times, for 4,096 patches of N x N from the 512 x 512 benchmark object (gridsize 2), the
patches alone, the forward pass `sum |patches|^2` and the forward plus backward pass with
gradients for the object, and for the object and the positions: each one
`tf.function(jit_compile=True)`, best of `--repeats` calls, as `benchmarks/run.py` does.
`--loss re2im2` uses `sum(re^2 + im^2)` instead, the same value with a cheaper gradient
than TensorFlow's for `abs`.

`--profile` then records the step with gradients for both in TensorFlow's profiler, with
XLA's CPU runtime tracing every operation (`--xla_cpu_enable_xprof_traceme`), and prints
the wall time of each operation per step (the names are those of the optimised HLO,
`experimental_get_compiler_ir()(stage="optimized_hlo")`). A conditional's time includes
the operations inside it. Tracing slows the step by a few percent.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme"

import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from benchmarks.methods import Case, make_inputs
from ptycho import PatchExtractionLayer
from ptycho._timing import best_time

LOSSES = {
    "abs2": lambda p: tf.reduce_sum(tf.abs(p) ** 2),
    "re2im2": lambda p: tf.reduce_sum(tf.math.real(p) ** 2 + tf.math.imag(p) ** 2),
}


def steps(N: int, loss_name: str):
    case = Case(512, N, 2, 1024)
    obj, positions, _ = make_inputs(case)
    layer = PatchExtractionLayer(N)
    obj_var, pos_var = tf.Variable(obj), tf.Variable(positions)
    loss = LOSSES[loss_name]

    @tf.function(jit_compile=True)
    def patches():
        return layer(obj_var, pos_var)

    @tf.function(jit_compile=True)
    def forward():
        return loss(layer(obj_var, pos_var))

    def backward(targets):
        @tf.function(jit_compile=True)
        def step():
            with tf.GradientTape() as tape:
                value = loss(layer(obj_var, pos_var))
            return value, tape.gradient(value, targets)

        return lambda: step()[0]

    return {
        "patches": patches,
        "forward": forward,
        "forward+backward, object": backward([obj_var]),
        "forward+backward, object and positions": backward([obj_var, pos_var]),
    }


def op_times(run, calls: int) -> list[tuple[float, str]]:
    """Wall milliseconds per call of each traced operation, longest first."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    for _ in range(2):
        run().numpy()
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(calls):
            run().numpy()
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        space = xplane_pb2.XSpace()
        with open(path, "rb") as file:
            space.ParseFromString(file.read())
    spans = collections.defaultdict(list)
    for plane in space.planes:
        names = {key: value.name for key, value in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                start = line.timestamp_ns * 1000 + event.offset_ps
                spans[names.get(event.metadata_id, "?")].append((start, start + event.duration_ps))
    runtime = ("ThunkExecutor", "Eager", "TFE_", "__inference", "CpuExecutable", "BlockUntil")
    rows = []
    for name, intervals in spans.items():
        if name.startswith(runtime) or "inference" in name or name == "step":
            continue
        intervals.sort()
        wall, end = 0, None  # the union of the intervals: an op may span threads
        for start, stop in intervals:
            if end is None or start > end:
                wall += stop - start
                end = stop
            elif stop > end:
                wall += stop - end
                end = stop
        rows.append((wall / 1e9 / calls, name))
    return sorted(rows, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--N", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--loss", choices=sorted(LOSSES), default="abs2")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    runs = steps(args.N, args.loss)
    times = {name: best_time(run, args.repeats) for name, run in runs.items()}
    print(f"tensorflow {tf.__version__}, N = {args.N}, loss {args.loss}")
    for name, seconds in times.items():
        ratio = f"  ({seconds / times['forward']:.2f}x forward)" if "backward" in name else ""
        print(f"  {name:40s} {seconds * 1e3:8.1f} ms{ratio}")
    if args.profile:
        print("operations of the step with gradients for the object and the positions:")
        for ms, name in op_times(runs["forward+backward, object and positions"], 5):
            if ms >= 0.1:
                print(f"  {ms:8.2f} ms  {name}")


if __name__ == "__main__":
    main()
