"""reassemble_patches: the explicit adjoint of extraction, and its normalised inverse."""

import numpy as np
import pytest
import tensorflow as tf
from support import edge_positions, numpy_overlap_add, random_object

from ptycho import _eager, extract_patches, reassemble_patches


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("N", [5, 8])
def test_overlap_add_matches_numpy_reference(rng, interpolation, N):
    shape = (23, 31)
    positions = edge_positions(rng, *shape, N, 40, np.float64)
    patches = random_object(rng, (len(positions), N, N, 1), np.complex128)
    canvas = reassemble_patches(patches, positions, shape, False, interpolation)
    expected = numpy_overlap_add(patches, positions, shape, interpolation)
    np.testing.assert_allclose(canvas.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "fourier"])
def test_reassembly_is_the_adjoint_of_extraction(rng, interpolation):
    """<A x, y> = <x, A^H y> in complex128, edges included."""
    x = random_object(rng, (19, 26), np.complex128)
    positions = edge_positions(rng, 19, 26, 9, 31, np.float64)
    y = random_object(rng, (len(positions), 9, 9, 1), np.complex128)
    ax = extract_patches(x, positions, 9, interpolation).numpy()
    ahy = reassemble_patches(y, positions, (19, 26), False, interpolation).numpy()
    lhs, rhs = np.vdot(y, ax), np.vdot(ahy, x)
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.float32])
def test_round_trip_gives_the_object_back_where_covered(rng, dtype):
    obj = random_object(rng, (60, 70), np.complex128)
    obj = (obj if np.dtype(dtype).kind == "c" else obj.real).astype(dtype)
    N = 16
    xs, ys = np.meshgrid(np.arange(10, 61, 6), np.arange(12, 51, 5))
    positions = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    canvas = reassemble_patches(extract_patches(obj, positions, N), positions, obj.shape)
    assert canvas.dtype == tf.as_dtype(dtype)
    covered = np.zeros(obj.shape, bool)
    covered[12 - N // 2 : 47 + N // 2, 10 - N // 2 : 58 + N // 2] = True
    tolerance = 1e-12 if dtype == np.complex128 else 1e-5
    np.testing.assert_allclose(canvas.numpy()[covered], obj[covered], rtol=0, atol=tolerance)
    assert np.all(canvas.numpy()[~covered] == 0)


def test_sub_pixel_round_trip_on_a_smooth_object(rng):
    """Sub-pixel positions give the object blurred by interpolating twice, no more."""
    yy, xx = np.mgrid[0:64, 0:64]
    obj = np.exp(2j * np.pi * (0.02 * yy + 0.03 * xx))
    positions = np.stack([rng.uniform(16, 48, 300), rng.uniform(16, 48, 300)], 1)
    canvas = reassemble_patches(extract_patches(obj, positions, 16), positions, obj.shape)
    inner = (slice(16, 48), slice(16, 48))
    # A bilinear pass damps a frequency f (cycles per pixel) by at most 1 - cos(pi f), about
    # 0.004 here; extraction and reassembly together stay well inside 0.02.
    assert np.abs(canvas.numpy()[inner] - obj[inner]).max() < 0.02


def test_many_patches_go_through_in_bounded_chunks(rng, monkeypatch):
    """Eager reassembly of more patches than one chunk adds the chunks exactly."""
    monkeypatch.setattr(_eager, "CHUNK_BYTES", 8 * 8 * 16 * 8)  # 16 patches of 8 x 8 per chunk
    positions = rng.uniform(-4, 44, (101, 2)).astype(np.float32)
    patches = random_object(rng, (101, 8, 8, 1), np.complex64)
    eager = reassemble_patches(patches, positions, (40, 40), normalize=False).numpy()
    expected = numpy_overlap_add(patches, positions, (40, 40))
    np.testing.assert_allclose(eager, expected, rtol=0, atol=2e-5)


def test_reassembly_is_differentiable(rng):
    patches = tf.Variable(random_object(rng, (5, 6, 6, 1), np.complex128))
    positions = rng.uniform(3, 17, (5, 2))
    with tf.GradientTape() as tape:
        canvas = reassemble_patches(patches, positions, (20, 20), normalize=False)
        loss = tf.reduce_sum(tf.abs(canvas) ** 2)
    grad = tape.gradient(loss, patches)
    # d/dy |A^H y|^2 = 2 A A^H y: extraction of the canvas, times two.
    expected = 2 * extract_patches(canvas, positions, 6).numpy()
    np.testing.assert_allclose(grad.numpy(), expected, atol=1e-10)


@pytest.mark.parametrize(
    ("patches", "positions", "shape", "error"),
    [
        (np.zeros((3, 4, 4, 1)), np.zeros((2, 2)), (8, 8), ValueError),
        (np.zeros((3, 4, 5, 1)), np.zeros((3, 2)), (8, 8), ValueError),
        (np.zeros((3, 4, 4, 1)), np.zeros((3, 2)), (8,), ValueError),
        (np.zeros((3, 4, 4, 1)), np.zeros((3, 2)), (0, 8), ValueError),
        (np.zeros((3, 4, 4, 1), np.int32), np.zeros((3, 2)), (8, 8), TypeError),
        (np.zeros((2, 4, 4, 3)), np.zeros((2, 1, 2, 4)), (8, 8), ValueError),
    ],
)
def test_bad_arguments_are_refused_with_clear_errors(patches, positions, shape, error):
    with pytest.raises(error):
        reassemble_patches(patches, positions, shape)


def test_fourier_normalised_reassembly_stays_on_the_pixels_read(rng):
    """Fourier's adjoint rings over its margin; normalised, only the footprints remain."""
    obj = random_object(rng, (64, 64), np.complex128)
    positions = np.array([[32.3, 32.7], [35.6, 30.2]])
    patches = extract_patches(obj, positions, 16, "fourier")
    canvas = reassemble_patches(patches, positions, obj.shape, interpolation="fourier").numpy()
    read = np.zeros(obj.shape, bool)
    for x, y in positions:
        read[int(y) - 8 : int(y) + 10, int(x) - 8 : int(x) + 10] = True  # bilinear footprints
    assert np.all(canvas[~read] == 0)
    assert np.abs(canvas).max() < 2 * np.abs(obj).max()
