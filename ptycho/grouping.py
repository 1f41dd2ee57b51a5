"""Grouping of scan positions for `gridsize > 1`: `c = gridsize**2` near neighbours each."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptycho._memory import check_memory

__all__ = ["Groups", "group_positions"]


@dataclass(frozen=True)
class Groups:
    """Groups of scan positions in the PtychoPINN formats.

    Attributes:
        global_offsets: `(G, 1, 2, 1)` float32, the mean `[x, y]` of each group.
        local_offsets: `(G, 1, 2, c)` float32, each member's position minus the mean, so
            that `global_offsets + local_offsets` is exactly (in float32) each member's
            own position.
        nn_indices: `(G, c)` int64, the scan index of each member.
    """

    global_offsets: np.ndarray
    local_offsets: np.ndarray
    nn_indices: np.ndarray

    @property
    def positions(self) -> np.ndarray:
        """`(G, 1, 2, c)` member positions, `global_offsets + local_offsets`."""
        return self.global_offsets + self.local_offsets


def group_positions(
    xcoords,
    ycoords,
    gridsize: int = 1,
    n_groups: int | None = None,
    neighbors: int = 4,
    seed: int = 0,
) -> Groups:
    """Group scan positions for patch extraction.

    For `gridsize` 1 every position is its own group, in scan order, and `n_groups` (if
    given) keeps the first `n_groups`. For `gridsize > 1`, each group starts from a scan
    position drawn at random and takes `c = gridsize**2` members among that position's
    `max(neighbors, c)` nearest neighbours (itself included), found with
    `scipy.spatial.cKDTree`. The draw is seeded: the same seed gives the same groups.

    Along each axis, the group mean is rounded to a multiple of the float32 spacing of
    the group's largest coordinate (a change of at most half that spacing: 3e-5 pixels at
    500). Then `local = member - mean` is exact in float32, and `global + local` equals
    each member's float32 position bit for bit, whenever each member coordinate is larger
    than its distance from the group mean: true of any scan that keeps its positions
    away from the origin by more than a group's spread. (Otherwise a local offset needs
    more bits than float32 holds, and the sum is within one float32 spacing of the
    offset.) For `gridsize` 1 the local offsets are zero and the sum is always exact.

    Args:
        xcoords, ycoords: `(n,)` scan positions in object pixels.
        gridsize: group side; `c = gridsize**2` members per group.
        n_groups: number of groups; by default one per scan position.
        neighbors: neighbourhood size `K` the members are drawn from.
        seed: random seed of the draw.
    """
    x, y = _coordinates(xcoords, "xcoords"), _coordinates(ycoords, "ycoords")
    if x.shape != y.shape:
        raise ValueError(f"xcoords and ycoords differ in length: {x.size} and {y.size}")
    if x.size == 0:
        raise ValueError("there are no scan positions")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("the scan positions hold NaN or infinite values")
    for name, value in (("gridsize", gridsize), ("neighbors", neighbors)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if n_groups is not None and (
        isinstance(n_groups, bool) or not isinstance(n_groups, int | np.integer) or n_groups < 1
    ):
        raise ValueError(f"n_groups must be a positive int, got {n_groups!r}")
    c = int(gridsize) ** 2  # a Python int: numpy integers would overflow
    if n_groups is not None:
        check_memory(int(n_groups) * (c * 32 + 16), f"{n_groups} groups")
    points = np.stack([x, y], axis=1).astype(np.float32)
    if c == 1:
        count = x.size if n_groups is None else min(n_groups, x.size)
        indices = np.arange(count)[:, None]
    else:
        if x.size < c:
            raise ValueError(f"gridsize {gridsize} needs at least {c} scan positions, got {x.size}")
        from scipy.spatial import cKDTree

        k = min(max(neighbors, c), x.size)
        _, near = cKDTree(points.astype(np.float64)).query(points.astype(np.float64), k=k)
        near = near.reshape(x.size, k)
        rng = np.random.default_rng(seed)
        count = x.size if n_groups is None else n_groups
        starts = rng.choice(x.size, size=count, replace=count > x.size)
        picks = np.argsort(rng.random((count, k - 1)), axis=1)[:, : c - 1] + 1
        indices = np.concatenate([near[starts, :1], np.take_along_axis(near[starts], picks, 1)], 1)
    members = points[indices]  # (G, c, 2) float32
    mean = members.astype(np.float64).mean(axis=1, keepdims=True)  # (G, 1, 2)
    spacing = np.spacing(np.abs(members).max(axis=1, keepdims=True)).astype(np.float64)
    mean = (np.round(mean / spacing) * spacing).astype(np.float32)
    local = members - mean  # exact: both are multiples of the spacing, and close
    global_offsets = np.transpose(mean, (0, 2, 1))[:, None]  # (G, 1, 2, 1)
    local_offsets = np.transpose(local, (0, 2, 1))[:, None]  # (G, 1, 2, c)
    return Groups(global_offsets, local_offsets, indices.astype(np.int64))


def _coordinates(values, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real numbers, got dtype {values.dtype}")
    if values.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}")
    return values.astype(np.float64)
