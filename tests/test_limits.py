"""Resource limits: far positions are cheap, indices never overflow, oversize requests fail."""

import numpy as np
import pytest
import tensorflow as tf

from ptycho import _kernel, extract_patches, reassemble_patches
from ptycho._memory import available_memory


@pytest.mark.parametrize("far", [1e6, -1e6, 1e9, 3e38])
def test_a_position_far_away_gives_zeros(far):
    obj = np.ones((64, 64), np.complex64)
    positions = np.array([[far, 10.0], [10.0, far], [far, far]], np.float32)
    assert np.all(extract_patches(obj, positions, 16).numpy() == 0)


def test_index_arithmetic_switches_to_int64_beyond_int32():
    """Traced only: a table of 50,000 x 50,000 pixels is never allocated."""
    spec = tf.TensorSpec([1, 50_000 + 2 * 17, 50_000 + 2 * 17, 2], tf.float32)
    positions = tf.TensorSpec([3, 1, 2], tf.float32)
    graph = _kernel.gather_windows.get_concrete_function(
        spec, positions, None, (16, 16), (-8, -8), "bilinear", True
    ).graph
    gathers = [op for op in graph.get_operations() if op.type == "XlaGather"]
    assert gathers and all(op.inputs[1].dtype == tf.int64 for op in gathers)


def test_window_starts_stay_exact_at_the_far_edge_of_a_huge_object():
    extent = (3_000_000_000, 3_000_000_000)  # beyond int32 in both axes
    positions = tf.constant([[[2_999_999_999.25, 2_999_999_998.5], [-5e9, 7e9]]], tf.float64)
    iy, ix, fy, fx = _kernel._positions(positions, (8, 8), (-4, -4), extent, "bilinear", tf.int64)
    assert int(ix[0, 0]) == 2_999_999_999 - 4 and int(iy[0, 0]) == 2_999_999_998 - 4
    assert float(fx[0, 0]) == 0.25 and float(fy[0, 0]) == 0.5
    # Far positions are clamped to just beyond the reach of a window: no overflow.
    assert -20 < int(ix[0, 1]) + 9 + 4 < 0 and int(iy[0, 1]) > extent[0]


@pytest.mark.skipif((available_memory() or 0) < 16 * 2**30, reason="needs 16 GiB of free memory")
def test_an_object_with_more_pixels_than_int32_counts():
    """46,341 x 46,341 float16 pixels (2^31 + 82,281): patches at the far corner are right."""
    side = 46_341
    obj = np.zeros((side, side), np.float16)
    obj[-3:, -3:] = 1
    obj[-1, -1] = 2
    positions = np.array([[side - 1.0, side - 1.0], [side - 1.5, side - 1.0], [5.0, 5.0]])
    patches = extract_patches(obj, positions.astype(np.float32), 4).numpy()[..., 0]
    np.testing.assert_array_equal(patches[0], [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 2, 0], [0] * 4])
    assert patches[1][2, 2] == 1.5 and np.all(patches[2] == 0)


def test_requests_larger_than_memory_are_refused_before_allocating():
    obj = np.ones((8, 8), np.complex64)
    with pytest.raises(ValueError, match="GiB of memory available"):
        extract_patches(obj, np.zeros((10**8, 2), np.float32), 64)
    with pytest.raises(ValueError, match="GiB of memory available"):
        extract_patches(obj, np.zeros((1, 2), np.float32), 10**6)
    with pytest.raises(ValueError, match="GiB of memory available"):
        reassemble_patches(np.zeros((1, 2, 2, 1)), np.zeros((1, 2)), (10**6, 10**6))


def test_a_container_memory_limit_caps_the_available_memory(tmp_path):
    from ptycho import _memory

    (tmp_path / "cgroup").write_text("0::/\n")
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("268435456\n")
    assert _memory._cgroup_room(str(tmp_path), str(tmp_path / "cgroup")) == 768 * 2**20
    (tmp_path / "memory.max").write_text("max\n")
    assert _memory._cgroup_room(str(tmp_path), str(tmp_path / "cgroup")) is None
