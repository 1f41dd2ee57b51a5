"""Grouping of scan positions for `gridsize > 1`: `c = gridsize**2` near neighbours each."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptycho._memory import check_memory

__all__ = ["Groups", "group_positions", "grouping_bytes"]

# Temporaries of one block of groups (neighbour lists, random keys, their order).
_BLOCK_BYTES = 64 * 2**20
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_TOP_SPACING = 2.0**104  # between float32 values in [2**127, 2**128)


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

    The groups are made in blocks, so that the memory needed beyond the result stays
    bounded (:func:`grouping_bytes` gives the peak); a request larger than the free
    memory is refused before anything large is allocated.

    Along each axis, the group mean is rounded to a multiple of the float32 spacing of
    the group's largest coordinate (a change of at most half that spacing: 3e-5 pixels at
    500). Then `local = member - mean` is exact in float32, and `global + local` equals
    each member's float32 position bit for bit, whenever each member coordinate is larger
    than its distance from the group mean: true of any scan that keeps its positions
    away from the origin by more than a group's spread. (Otherwise a local offset needs
    more bits than float32 holds, and the sum is within one float32 spacing of the
    offset.) For `gridsize` 1 the local offsets are zero and the sum is always exact.

    Args:
        xcoords, ycoords: `(n,)` scan positions in object pixels, finite and within the
            float32 range.
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
    _check_count(gridsize, "gridsize")
    _check_count(neighbors, "neighbors")
    if n_groups is not None:
        _check_count(n_groups, "n_groups")
    n, c = x.size, int(gridsize) ** 2  # Python ints: numpy integers would overflow
    if c > 1 and n < c:
        raise ValueError(f"gridsize {gridsize} needs at least {c} scan positions, got {n}")
    count = _group_count(n, c, n_groups)
    k = min(max(int(neighbors), c), n)
    check_memory(
        grouping_bytes(n, int(gridsize), n_groups, int(neighbors)),
        f"grouping {n} positions into {count} groups of {c} among neighbors={k}",
    )
    points = np.empty((n, 2), np.float32)
    points[:, 0], points[:, 1] = x, y
    del x, y
    rows = _block_rows(c, k)
    global_offsets = np.empty((count, 1, 2, 1), np.float32)
    local_offsets = np.empty((count, 1, 2, c), np.float32)
    if c == 1:
        indices = np.arange(count, dtype=np.int64)[:, None]
    else:
        indices = np.empty((count, c), np.int64)
        from scipy.spatial import cKDTree

        points64 = points.astype(np.float64)
        tree = cKDTree(points64)
        rng = np.random.default_rng(seed)
        starts = rng.choice(n, size=count, replace=count > n)
    for lo in range(0, count, rows):
        hi = min(lo + rows, count)
        if c > 1:
            # Only this block's neighbour lists and random keys exist at a time. The
            # generator fills `random((a + b, m))` in the order of `random((a, m))` then
            # `random((b, m))`, so the draw is the one made for all groups at once.
            _, near = tree.query(points64[starts[lo:hi]], k=k)
            picks = np.argsort(rng.random((hi - lo, k - 1)), axis=1)[:, : c - 1] + 1
            indices[lo:hi, 0] = near[:, 0]
            indices[lo:hi, 1:] = np.take_along_axis(near, picks, 1)
            del near, picks
        members = points[indices[lo:hi]]  # (b, c, 2) float32
        mean = members.astype(np.float64).mean(axis=1, keepdims=True)  # (b, 1, 2)
        with np.errstate(over="ignore"):  # the spacing of float32's largest value is inf
            spacing = np.spacing(np.abs(members).max(axis=1, keepdims=True))
        spacing = np.minimum(spacing.astype(np.float64), _TOP_SPACING)
        mean = (np.round(mean / spacing) * spacing).astype(np.float32)
        with np.errstate(over="ignore"):
            local = members - mean  # exact: both are multiples of the spacing, and close
        if not np.isfinite(local).all():
            raise ValueError(
                "The members of a group lie further apart than float32 offsets can hold. "
                f"Received: xcoords and ycoords spanning up to {np.abs(members).max():.4g}"
            )
        global_offsets[lo:hi, 0, :, 0] = mean[:, 0]
        local_offsets[lo:hi, 0] = np.transpose(local, (0, 2, 1))
    return Groups(global_offsets, local_offsets, indices)


def grouping_bytes(n_positions: int, gridsize: int, n_groups: int | None, neighbors: int) -> int:
    """Peak bytes :func:`group_positions` allocates for these arguments.

    The coordinates in float64 and float32, the k-d tree, the draw of the starting
    positions, one block of groups (neighbour lists and random keys) and the result.
    Arguments as for :func:`group_positions`, with `n_positions` the number of scan
    positions; they are assumed valid.
    """
    n, c = int(n_positions), int(gridsize) ** 2
    count = _group_count(n, c, n_groups)
    k = min(max(int(neighbors), c), n)
    nbytes = 16 * n + 8 * n  # float64 coordinates, float32 points
    if c > 1:
        # float64 points, the tree's index and nodes (20 bytes a point measured), the
        # draw of the starting positions (a permutation of all of them, without repeats)
        nbytes += 16 * n + 24 * n + 8 * max(n, count)
    nbytes += min(count, _block_rows(c, k)) * _row_bytes(c, k)
    return nbytes + count * (8 + 16 * c)  # global, local offsets, indices


def _row_bytes(c: int, k: int) -> int:
    """Temporaries per group in a block: neighbour distances and indices, random keys and
    their order (`k` each, 8 bytes), and the members in float32 and float64."""
    return (32 * k if c > 1 else 0) + 64 * c + 64


def _block_rows(c: int, k: int) -> int:
    return max(1, _BLOCK_BYTES // _row_bytes(c, k))


def _group_count(n: int, c: int, n_groups: int | None) -> int:
    if n_groups is None:
        return n
    return min(int(n_groups), n) if c == 1 else int(n_groups)


def _check_count(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _coordinates(values, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real numbers, got dtype {values.dtype}")
    if values.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}")
    values = values.astype(np.float64, copy=False)
    if values.size:
        low, high = values.min(), values.max()  # NaN if any is NaN; no copy made
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"the scan positions hold NaN or infinite values ({name})")
        if max(-low, high) > _FLOAT32_MAX:
            raise ValueError(
                f"{name} must lie within the float32 range (+-{_FLOAT32_MAX:.4g}), in which "
                f"positions are held. Received: max |{name}| = {max(-low, high):.4g}"
            )
    return values
