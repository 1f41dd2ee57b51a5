"""Legacy raw_data entry points: shapes, loop-vs-batched equivalence and the oracle."""

import numpy as np
import pytest
import tensorflow as tf
from support import oracle_patches, random_object

from ptycho import raw_data, tf_helper
from ptycho.config.config import ModelConfig

ATOL = {np.complex64: 1e-6, np.complex128: 1e-10}


def patterned_image(size=100, dtype=np.complex64):
    """A deterministic object with structure in amplitude and phase."""
    y, x = np.mgrid[:size, :size] / size
    return (np.sin(7 * x) * np.cos(5 * y) + 1.5 + 1j * np.cos(3 * x * y)).astype(dtype)


def padded_inputs(obj, offsets, N):
    gt_padded = tf_helper.pad(tf.constant(obj[None, :, :, None]), N // 2)
    return gt_padded, np.asarray(offsets).reshape(-1, 1, 2, 1)


@pytest.mark.parametrize("N", [32, 64, 128])
@pytest.mark.parametrize("gridsize", [1, 2, 3])
@pytest.mark.parametrize("B", [1, 10, 100])
def test_batched_shapes(N, gridsize, B):
    c = gridsize**2
    obj = patterned_image(100)
    offsets = np.random.default_rng(B).uniform(0, 100, (B * c, 2)).astype(np.float32)
    patches = raw_data._get_image_patches_batched(*padded_inputs(obj, offsets, N), N, B, c)
    assert isinstance(patches, tf.Tensor)
    assert patches.shape == (B, N, N, c) and patches.dtype == tf.complex64
    assert np.all(np.isfinite(patches.numpy()))


def test_basic_patterned_image_on_a_2x2_grid():
    obj = patterned_image(100)
    N, B, c = 32, 3, 4
    offsets = np.array([[50, 50], [51, 50], [50, 51], [51, 51]] * B, np.float32)
    offsets[4:] += 10.5
    patches = raw_data._get_image_patches_batched(*padded_inputs(obj, offsets, N), N, B, c).numpy()
    np.testing.assert_array_equal(patches[0, 16, 16], obj[[50, 50, 51, 51], [50, 51, 50, 51]])
    expected = oracle_patches(obj, offsets, N).reshape(B, c, N, N).transpose(0, 2, 3, 1)
    assert np.abs(patches - expected).max() <= 1e-6 * np.abs(obj).max()


def _equivalence_cases():
    for dtype in (np.complex64, np.complex128):
        for gridsize in (1, 2, 3):
            yield dtype, gridsize


@pytest.mark.parametrize(("dtype", "gridsize"), list(_equivalence_cases()))
def test_iterative_and_batched_agree(rng, dtype, gridsize):
    N, B, c = 16, 3, gridsize**2
    obj = random_object(rng, (40, 36), dtype)
    real = np.float32 if dtype == np.complex64 else np.float64
    offsets = rng.uniform(-N / 2 - 1, 41 + N / 2, (B * c, 2)).astype(real)
    offsets[0] = 0.0  # zero offset
    offsets[1 % (B * c)] = [35.0, 39.0]  # last pixel
    offsets[-1] = [-0.5, 39.5]  # half a pixel off two edges
    inputs = padded_inputs(obj, offsets, N)
    loop = raw_data._get_image_patches_iterative(*inputs, N, B, c)
    batched = raw_data._get_image_patches_batched(*inputs, N, B, c)
    assert loop.dtype == batched.dtype == dtype
    np.testing.assert_allclose(batched.numpy(), loop.numpy(), rtol=0, atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_single_patch_agrees(rng, dtype):
    obj = random_object(rng, (30, 30), dtype)
    inputs = padded_inputs(obj, [[12.25, 7.75]], 8)
    loop = raw_data._get_image_patches_iterative(*inputs, 8, 1, 1)
    batched = raw_data._get_image_patches_batched(*inputs, 8, 1, 1)
    np.testing.assert_allclose(batched.numpy(), loop.numpy(), rtol=0, atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("batched", [True, False])
def test_get_image_patches_matches_oracle(rng, dtype, batched):
    N, gridsize, B = 12, 2, 4
    c = gridsize**2
    obj = random_object(rng, (33, 41), dtype)
    real = np.float32 if dtype == np.complex64 else np.float64
    global_offsets = rng.uniform(-6, 45, (B, 1, 2, 1)).astype(real)
    local_offsets = rng.uniform(-3, 3, (B, 1, 2, c)).astype(real)
    config = ModelConfig(N=N, gridsize=gridsize, use_batched_patch_extraction=batched)
    patches = raw_data.get_image_patches(obj, global_offsets, local_offsets, config=config)
    assert isinstance(patches, tf.Tensor) and patches.dtype == dtype
    assert patches.shape == (B, N, N, c)
    positions = (global_offsets + local_offsets)[:, 0].transpose(0, 2, 1).reshape(-1, 2)
    expected = oracle_patches(obj, positions, N).reshape(B, c, N, N).transpose(0, 2, 3, 1)
    tolerance = 1e-6 if dtype == np.complex64 else 1e-12
    assert np.abs(patches.numpy() - expected).max() <= tolerance * np.abs(obj).max()


def test_global_offsets_broadcast_against_local(rng):
    obj = random_object(rng, (30, 30))
    global_offsets = rng.uniform(5, 25, (3, 1, 2, 1)).astype(np.float32)
    local_offsets = rng.uniform(-2, 2, (3, 1, 2, 4)).astype(np.float32)
    broadcast = raw_data.get_image_patches(obj, global_offsets, local_offsets, N=8, gridsize=2)
    tiled = raw_data.get_image_patches(
        obj[:, :, None], np.repeat(global_offsets, 4, axis=3), local_offsets, N=8, gridsize=2
    )
    np.testing.assert_array_equal(broadcast.numpy(), tiled.numpy())


def test_get_image_patches_reads_legacy_params(rng, legacy_cfg):
    legacy_cfg.update(N=6, gridsize=1, use_batched_patch_extraction=False)
    obj = random_object(rng, (20, 20))
    offsets = rng.uniform(0, 20, (2, 1, 2, 1)).astype(np.float32)
    patches = raw_data.get_image_patches(obj, offsets, np.zeros_like(offsets))
    assert patches.shape == (2, 6, 6, 1)
    expected = oracle_patches(obj, offsets[:, 0, :, 0], 6)[..., None]
    assert np.abs(patches.numpy() - expected).max() <= 1e-6 * np.abs(obj).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_real_objects_keep_their_dtype(rng, dtype):
    obj = rng.standard_normal((24, 24)).astype(dtype)
    offsets = rng.uniform(0, 24, (2, 1, 2, 1))
    patches = raw_data.get_image_patches(obj, offsets, np.zeros_like(offsets), N=6, gridsize=1)
    assert patches.dtype == dtype
    inputs = padded_inputs(obj.astype(np.complex128).real.astype(dtype), offsets[:, 0, :, 0], 6)
    loop = raw_data._get_image_patches_iterative(*inputs, 6, 2, 1)
    batched = raw_data._get_image_patches_batched(*inputs, 6, 2, 1)
    assert loop.dtype == batched.dtype == dtype
    np.testing.assert_allclose(
        batched.numpy(), loop.numpy(), atol=1e-6 if dtype == np.float32 else 1e-12
    )
