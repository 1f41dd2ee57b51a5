"""The PNG plots of the table and the sweep (matplotlib: `pip install -e ".[bench]"`)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.measure import SWEEP_METHODS, SWEEP_N
from benchmarks.methods import METHODS, Case

__all__ = ["plot"]


def plot(rows: list[dict], sweep: list[dict], case: Case, out_dir: Path) -> list[str]:
    """PNG plots; returns their paths (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[notebooks]')")
        return []
    paths = []
    names = [*METHODS, "loop (extrapolated)"]
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig, ax = plt.subplots(figsize=(8, 4))
    timed = [row for row in rows if "seconds" in row]
    ax.barh(
        [row["method"] for row in timed],
        [row["seconds"] * 1e3 for row in timed],
        color=[colors[row["method"]] for row in timed],
    )
    ax.set_xscale("log")
    ax.set_xlabel("time (ms, log scale)")
    ax.set_title(f"{case.patches} patches of {case.N}x{case.N}, {case.size}x{case.size} object")
    fig.tight_layout()
    paths.append(str(out_dir / "benchmark_methods.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    if sweep:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        n64 = [row for row in sweep if row["N"] == 64]
        for method in sorted({row["method"] for row in n64}):
            pts = sorted((row["P"], row["seconds"]) for row in n64 if row["method"] == method)
            axes[0].loglog(*zip(*pts, strict=True), "o-", color=colors[method], label=method)
        axes[0].set_xlabel("patches P")
        axes[0].set_ylabel("time (s)")
        axes[0].set_title("time against P (N=64)")
        axes[0].legend(fontsize=8)
        for method in SWEEP_METHODS:
            pts = []
            for N in SWEEP_N:
                sizes = [row for row in sweep if row["N"] == N and row["method"] == method]
                if sizes:
                    row = max(sizes, key=lambda r: r["P"])
                    pts.append((N, row["P"] * N * N / row["seconds"] / 1e6))
            if pts:
                axes[1].plot(*zip(*pts, strict=True), "o-", color=colors[method], label=method)
        axes[1].set_xscale("log", base=2)
        axes[1].set_xlabel("patch size N")
        axes[1].set_ylabel("throughput (Mpx/s) at the largest P")
        axes[1].set_title("throughput against N")
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        paths.append(str(out_dir / "benchmark_sweep.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
