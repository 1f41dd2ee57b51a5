"""Smoke test of the benchmark at a tiny size: the JSON and PNG outputs are well formed."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# `benchmarks/` is a folder of the checkout, not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import measure, methods, run, targets

RUN = [sys.executable, str(Path(run.__file__).resolve())]

# TensorFlow's native log lines: glog-style "I0000 00:00:...", CUDA probing, absl's notice.
NATIVE_LOG = re.compile(r"^[IWE]\d{4} |cuInit|absl::InitializeLog", re.M)
TINY = ["--size", "32", "--N", "4", "--groups", "2"]


def test_benchmark_tiny_run_writes_json_and_plots(tmp_path, capsys):
    argv = ["--size", "40", "--N", "8", "--groups", "4", "--repeats", "1", "--loop-patches", "4"]
    argv += ["--no-memory", "--no-scaling", "--out", str(tmp_path)]
    assert run.main(argv) == 0
    result = json.loads((tmp_path / "benchmark.json").read_text())
    assert result["device"].startswith(("CPU", "GPU"))
    assert result["case"]["patches"] == 16
    timed = {row["method"]: row for row in result["methods"]}
    assert set(timed) == set(methods.METHODS)
    for name, row in timed.items():
        if name == "jax_vmap" and importlib.util.find_spec("jax") is None:
            assert row["note"] == f"skipped: {methods.JAX_HINT}" and "seconds" not in row
            continue
        assert row["seconds"] > 0 and row["patches_per_s"] > 0
    assert timed["copy"]["fraction_of_copy"] == 1.0
    assert timed["loop"]["speedup_vs_loop"] == 1.0
    checks = result["checks"]
    assert {"first_call_extra_s", "new_count_call_over_warm", "backward_ratio"} <= set(checks)
    assert result["plots"], "no plots written"
    for path in result["plots"]:
        with open(path, "rb") as png:
            assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "layer_eager" in capsys.readouterr().out


def test_benchmark_sweep_case_and_memory_child(tmp_path):
    case = methods.Case(size=32, N=4, gridsize=1, groups=8)
    assert methods.naive_bytes(case) == 8 * (32 + 4) ** 2 * 8
    # In a fresh process, a 64 MiB output is mapped afresh and written page by page: all of
    # it is extra memory. (In this process TensorFlow's allocator may reuse memory freed
    # by earlier tests, so only a fresh child gives the figure.)
    big = methods.Case(size=32, N=64, gridsize=1, groups=2048)
    assert measure.measure_memory("layer_eager", big, loop_patches=4) >= big.output_bytes


def test_benchmark_rejects_bad_arguments(capsys):
    assert run.main(["--N", "0"]) == 2
    assert "--N must be >= 1. Received: 0" in capsys.readouterr().err
    assert run.main(["--loop-patches", "x"]) == 2
    assert "error: --loop-patches must be an integer" in capsys.readouterr().err
    assert run.main(["--quick", "--sweep"]) == 2
    assert "error: argument --sweep: not allowed with argument --quick" in capsys.readouterr().err


def test_quick_run_prints_a_verdict_next_to_every_target(tmp_path, capsys):
    argv = ["--quick", "--size", "40", "--N", "8", "--groups", "4", "--out", str(tmp_path)]
    assert run.main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads((tmp_path / "benchmark.json").read_text())
    assert result["quick"] is True
    skipped = {row["method"] for row in result["methods"] if "seconds" not in row}
    without_jax = {"jax_vmap"} if importlib.util.find_spec("jax") is None else set()
    assert skipped == {"naive", "naive_chunked"} | without_jax
    verdicts = {v["figure"]: v for v in result["verdicts"]}
    assert set(verdicts) == {target[0] for target in targets.TARGETS}
    for figure in ("layer_speedup_vs_loop", "first_call_extra_s", "backward_ratio"):
        assert verdicts[figure]["verdict"] in ("PASS", "SHORT")
    assert verdicts["scaling_per_patch_ratio"]["verdict"] == "SKIPPED"
    assert verdicts["scaling_per_patch_ratio"]["reason"] == "skipped with --quick"
    for v in verdicts.values():
        line = next(line for line in captured.out.splitlines() if v["label"] + ":" in line)
        assert line.split()[0] == v["verdict"] and f"(target {v['target']})" in line
    assert "SKIPPED time per patch at the large P over the default: skipped with --quick" in (
        captured.out
    )
    # Progress goes to stderr as the run goes.
    assert "[6/11] layer_eager ..." in captured.err and "engine checks:" in captured.err


def test_verdicts_compare_each_figure_with_its_target():
    figures = {"layer_speedup_vs_loop": 999.0, "backward_ratio": 3.0}
    results = {v["figure"]: v["verdict"] for v in targets.verdicts(figures)}
    assert results["layer_speedup_vs_loop"] == "SHORT"
    assert results["backward_ratio"] == "PASS"
    assert results["first_call_extra_s"] == "SKIPPED"
    skipped = {"checks": "skipped with --no-checks"}
    reasons = {v["figure"]: v.get("reason") for v in targets.verdicts(figures, skipped)}
    assert reasons["first_call_extra_s"] == "skipped with --no-checks"
    assert reasons["scaling_per_patch_ratio"] == "not measured"
    assert reasons["backward_ratio"] is None


@pytest.mark.parametrize("shown", [False, True], ids=["quiet", "PTYCHO_TF_LOGS=1"])
def test_quick_run_hides_native_logs_unless_asked(tmp_path, shown):
    """The engine checks compile with XLA, so TensorFlow has lines to print if not hidden."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PTYCHO_TF_LOGS", None)
    if shown:
        env["PTYCHO_TF_LOGS"] = "1"
    command = [*RUN, "--quick", *TINY, "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[11/11] copy_warm ..." in done.stderr and "targets (from" in done.stdout
    if not shown:
        assert not NATIVE_LOG.search(done.stderr), done.stderr
    elif not NATIVE_LOG.search(done.stderr):
        pytest.skip("TensorFlow prints no native log lines on this machine: nothing to show")


def test_benchmark_script_is_quiet_and_names_itself(tmp_path):
    """Run as the README says, from another folder: the script finds its checkout itself."""
    argv = ["--quick", *TINY, "--no-checks", "--out", str(tmp_path)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PTYCHO_TF_LOGS", None)
    options = {"capture_output": True, "text": True, "env": env, "cwd": tmp_path}
    done = subprocess.run([*RUN, *argv], **options)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "jitted forward+backward over forward: skipped with --no-checks" in done.stdout
    assert not NATIVE_LOG.search(done.stderr), done.stderr
    helped = subprocess.run([*RUN, "--help"], **options)
    assert helped.stdout.startswith("usage: python benchmarks/run.py")
    wrong = subprocess.run([*RUN, "--N", "0"], **options)
    assert wrong.returncode == 2
    assert wrong.stderr == "python benchmarks/run.py: error: --N must be >= 1. Received: 0\n"


def test_keep_freed_memory_flag_is_recorded(tmp_path):
    """Run in a child process: the flag changes the allocator of the whole process."""
    argv = ["--size", "24", "--N", "4", "--groups", "2", "--repeats", "1", "--loop-patches", "2"]
    argv += ["--no-memory", "--no-checks", "--keep-freed-memory", "--out", str(tmp_path)]
    done = subprocess.run([*RUN, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "benchmark.json").read_text())
    assert result["allocator"] == "glibc keeps freed memory"
    assert "allocator: glibc keeps freed memory" in done.stdout


def test_the_jax_method_is_skipped_without_jax(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # `import jax` raises ImportError
    with pytest.raises(methods.Unavailable, match="jax not installed"):
        methods.build("jax_vmap", methods.Case(size=32, N=4, gridsize=1, groups=2))


def test_the_jax_method_extracts_the_layers_patches():
    """The JAX method is a fair comparison: it computes the same patches (the demo scan's
    positions are on the object, where its clamped `dynamic_slice` is right)."""
    pytest.importorskip("jax")
    from ptycho.layers import PatchExtractionLayer

    case = methods.Case(size=48, N=8, gridsize=2, groups=6)
    obj, positions, _ = methods.make_inputs(case)
    got = np.asarray(methods.build("jax_vmap", case).run())
    expected = PatchExtractionLayer(case.N)(obj, positions).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(obj).max())
