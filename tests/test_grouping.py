"""Grouping of scan positions: seeded, near neighbours, exact offsets in float32."""

import numpy as np
import pytest

from ptycho.demo import demo_scan
from ptycho.grouping import group_positions


@pytest.fixture
def scan():
    return demo_scan(512, 2500, seed=3, margin=32)


def members(scan, groups):
    return scan.astype(np.float32)[groups.nn_indices]  # (G, c, 2)


def test_gridsize_one_keeps_every_position_in_order(scan):
    groups = group_positions(scan[:, 0], scan[:, 1])
    assert groups.global_offsets.shape == (2500, 1, 2, 1)
    assert groups.local_offsets.shape == (2500, 1, 2, 1)
    np.testing.assert_array_equal(groups.nn_indices[:, 0], np.arange(2500))
    np.testing.assert_array_equal(groups.positions[:, 0, :, 0], scan.astype(np.float32))
    assert np.all(groups.local_offsets == 0)


@pytest.mark.parametrize("gridsize", [2, 3])
def test_global_plus_local_is_each_member_exactly_in_float32(scan, gridsize):
    groups = group_positions(scan[:, 0], scan[:, 1], gridsize, n_groups=6000, neighbors=12)
    c = gridsize**2
    assert groups.local_offsets.shape == (6000, 1, 2, c)
    assert groups.global_offsets.dtype == groups.local_offsets.dtype == np.float32
    total = groups.global_offsets + groups.local_offsets  # float32 arithmetic
    np.testing.assert_array_equal(np.transpose(total[:, 0], (0, 2, 1)), members(scan, groups))
    mean = members(scan, groups).astype(np.float64).mean(axis=1)
    spacing = np.spacing(np.float32(512))
    assert np.abs(groups.global_offsets[:, 0, :, 0] - mean).max() <= spacing


def test_members_are_near_neighbours_and_distinct(scan):
    from scipy.spatial import cKDTree

    groups = group_positions(scan[:, 0], scan[:, 1], 2, n_groups=3000, neighbors=6, seed=5)
    _, near = cKDTree(scan).query(scan, k=6)
    for row in groups.nn_indices:
        assert len(set(row)) == 4
        assert set(row) <= set(near[row[0]])


def test_the_seed_makes_groups_reproducible(scan):
    first = group_positions(scan[:, 0], scan[:, 1], 2, n_groups=500, seed=7)
    again = group_positions(scan[:, 0], scan[:, 1], 2, n_groups=500, seed=7)
    other = group_positions(scan[:, 0], scan[:, 1], 2, n_groups=500, seed=8)
    np.testing.assert_array_equal(first.nn_indices, again.nn_indices)
    np.testing.assert_array_equal(first.local_offsets, again.local_offsets)
    assert not np.array_equal(first.nn_indices, other.nn_indices)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gridsize": 0}, "gridsize"),
        ({"n_groups": 0}, "n_groups"),
        ({"neighbors": -1}, "neighbors"),
        ({"gridsize": 10}, "needs at least 100"),
    ],
)
def test_bad_arguments(kwargs, message):
    x = np.arange(20.0)
    with pytest.raises(ValueError, match=message):
        group_positions(x, x, **kwargs)


def test_numpy_integer_gridsize_and_bool_counts():
    """Was: np.int64(2**32) squared overflowed into 3 members per group, silently."""
    x = np.arange(20.0)
    groups = group_positions(x, x, np.int64(2), n_groups=5)
    assert groups.local_offsets.shape == (5, 1, 2, 4)
    with pytest.raises(ValueError, match="needs at least"):
        group_positions(x, x, np.int64(2**32))
    with pytest.raises(ValueError, match="n_groups"):
        group_positions(x, x, 2, n_groups=True)


def test_non_finite_positions_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        group_positions([1.0, np.nan], [2.0, 3.0])
