"""Smoke test of the benchmark at a tiny size: the JSON and PNG outputs are well formed."""

import json
import subprocess
import sys

from ptycho import benchmark


def test_benchmark_tiny_run_writes_json_and_plots(tmp_path, capsys):
    argv = ["--size", "40", "--N", "8", "--groups", "4", "--repeats", "1", "--loop-patches", "4"]
    argv += ["--no-memory", "--no-scaling", "--out", str(tmp_path)]
    assert benchmark.main(argv) == 0
    result = json.loads((tmp_path / "benchmark.json").read_text())
    assert result["device"].startswith(("CPU", "GPU"))
    assert result["case"]["patches"] == 16
    timed = {row["method"]: row for row in result["methods"]}
    assert set(timed) == set(benchmark.METHODS)
    for row in timed.values():
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
    case = benchmark.Case(size=32, N=4, gridsize=1, groups=8)
    assert benchmark.naive_bytes(case) == 8 * (32 + 4) ** 2 * 8
    extra = benchmark.child_memory("layer_eager", case, loop_patches=4)
    assert extra >= 0


def test_benchmark_rejects_bad_arguments(capsys):
    assert benchmark.main(["--N", "0"]) == 2
    assert "--N must be >= 1" in capsys.readouterr().err


def test_keep_freed_memory_flag_is_recorded(tmp_path):
    """Run in a child process: the flag changes the allocator of the whole process."""
    argv = ["--size", "24", "--N", "4", "--groups", "2", "--repeats", "1", "--loop-patches", "2"]
    argv += ["--no-memory", "--no-checks", "--keep-freed-memory", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "ptycho.benchmark", *argv], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "benchmark.json").read_text())
    assert result["allocator"] == "glibc keeps freed memory"
    assert "allocator: glibc keeps freed memory" in done.stdout
