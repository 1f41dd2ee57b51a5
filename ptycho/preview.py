"""PNG previews of an extraction: the object with the scan, and a montage of patches."""

from __future__ import annotations

import numpy as np

__all__ = ["write_preview"]


def write_preview(path, obj, groups, patches_file, N: int, count: int = 8) -> None:
    """Write a PNG preview to `path`.

    Top row: the object's amplitude and phase with every scan position and the footprints
    of a few groups drawn over them. Below: the amplitude and phase of `count` patches
    taken evenly through the output file `patches_file`.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError as err:  # matplotlib is an optional dependency
        raise ImportError("--preview needs matplotlib: pip install matplotlib") from err
    from ptycho._npz import open_npz_arrays

    # Our own file, just written: memory-mapped, only the shown patches are read.
    Y = open_npz_arrays(patches_file, keys=["Y"], verify=False)["Y"]
    picks = np.linspace(0, len(Y) - 1, min(count, len(Y))).astype(int)
    positions = groups.positions[:, 0]  # (G, 2, c)
    fig = plt.figure(figsize=(2 * max(len(picks), 4), 9), layout="constrained")
    try:
        grid = fig.add_gridspec(3, max(len(picks), 4), height_ratios=[3, 1, 1])
        for column, (title, image, cmap) in enumerate(
            [("object amplitude", np.abs(obj), "gray"), ("object phase", np.angle(obj), "twilight")]
        ):
            span = max(len(picks), 4) // 2
            ax = fig.add_subplot(grid[0, column * span : (column + 1) * span])
            ax.imshow(image, cmap=cmap)
            ax.plot(positions[:, 0].ravel(), positions[:, 1].ravel(), ".", color="tab:red", ms=2)
            for index, group in enumerate(picks[:4]):
                color = f"C{index}"
                for x, y in positions[group].T:
                    corner = (x - N // 2 - 0.5, y - N // 2 - 0.5)
                    ax.add_patch(Rectangle(corner, N, N, fill=False, edgecolor=color, lw=1.2))
            ax.set_title(f"{title}, scan and {min(4, len(picks))} group footprints")
            ax.axis("off")
        for column, group in enumerate(picks):
            patch = np.asarray(Y[group, :, :, 0])
            for row, (image, cmap) in enumerate(
                [(np.abs(patch), "gray"), (np.angle(patch), "twilight")], start=1
            ):
                ax = fig.add_subplot(grid[row, column])
                ax.imshow(image, cmap=cmap)
                ax.set_title(f"group {group} {'amplitude' if row == 1 else 'phase'}", fontsize=8)
                ax.axis("off")
        fig.savefig(path, format="png", dpi=80)
    finally:
        plt.close(fig)
