"""Every public op and layer in every execution mode: eagerly, in a `tf.function`, and in a
`tf.function(jit_compile=True)` (the `mode` fixture of `conftest.py`).

Each mode is checked against the eager result, bit for bit unless a tolerance is stated,
and against the float64 oracles of `support.py` where one exists (not for `"fourier"`).
Eager calls run the same XLA kernels in chunks of fixed sizes, so a whole-batch program
agrees with them exactly; `"fourier"`'s transforms of a different batch size agree to 1e-5.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy.ndimage import shift as nd_shift
from support import (
    edge_positions,
    numpy_overlap_add,
    oracle_patches,
    positions_away_from_integers,
    random_object,
    smooth_object,
)

from ptycho import (
    LearnableObject,
    PatchExtractionLayer,
    extract_patches,
    raw_data,
    reassemble_patches,
    tf_helper,
)
from ptycho.config.config import ModelConfig

INTERPOLATIONS = ["bilinear", "nearest", "fourier"]
TOLERANCE = {np.complex64: 1e-6, np.float32: 1e-6, np.complex128: 1e-12, np.float64: 1e-12}
REAL_OF = {np.complex64: np.float32, np.float32: np.float32, np.complex128: np.float64}
# Between modes, "fourier" transforms batches of different sizes: within 1e-5 absolute, as
# tests/test_kernel_fourier.py has always asserted (here without its default rtol of 1e-7).
FOURIER_ATOL = 1e-5


def _object(rng, shape, dtype):
    obj = random_object(rng, shape, np.complex128)
    return (obj if np.dtype(dtype).kind == "c" else obj.real).astype(dtype)


def _between_modes(interpolation):
    return FOURIER_ATOL if interpolation == "fourier" else 0.0


def _fused(mode, obj):
    """Where a whole-function XLA program fuses the arithmetic around the kernel into it (the
    complex object from two real weights, the sum of global and local offsets, the real part of
    a real object), it may round 1 ulp differently from the eager call, which runs the kernel
    on its own: agreement to the precision target then, exact otherwise."""
    dtype = np.asarray(obj).dtype.type
    return TOLERANCE[dtype] * np.abs(obj).max() if mode.name == "jit" else 0.0


# extract_patches and the layers --------------------------------------------------------


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per-sample"])
@pytest.mark.parametrize("dtype", [np.complex64, np.float32])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_extract_patches(rng, mode, interpolation, dtype, per_sample):
    """A shared object with flat positions, or one object per group with channel positions."""
    N, c = 7, 4
    objs = _object(rng, (3, 23, 19), dtype)
    flat = edge_positions(rng, 23, 19, N, 3 * c - 9, REAL_OF[dtype])  # 3 groups of c
    if per_sample:
        obj, positions = objs[..., None], flat.reshape(3, c, 2).transpose(0, 2, 1)[:, None]
    else:
        obj, positions = objs[0], flat

    def extract(o, p):
        return extract_patches(o, p, N, interpolation)

    patches = mode.agrees_with_eager(extract, obj, positions, atol=_between_modes(interpolation))
    assert patches.dtype == dtype
    if interpolation == "fourier":
        return
    if per_sample:
        got = patches.transpose(0, 3, 1, 2)  # (3, c, N, N)
        expected = np.stack(
            [oracle_patches(objs[b], flat[b * c : (b + 1) * c], N, interpolation) for b in range(3)]
        )
    else:
        got, expected = patches[..., 0], oracle_patches(obj, flat, N, interpolation)
    assert np.abs(got - expected).max() <= TOLERANCE[dtype] * np.abs(objs).max()


@pytest.mark.parametrize(
    ("interpolation", "dtype"),
    [
        ("bilinear", np.complex64),
        ("bilinear", np.complex128),
        ("bilinear", np.float32),
        ("nearest", np.complex64),
        ("fourier", np.complex64),
    ],
)
def test_patch_extraction_layer(rng, mode, interpolation, dtype):
    obj = _object(rng, (48, 40), dtype)
    positions = edge_positions(rng, 48, 40, 10, 40, REAL_OF[dtype])
    layer = PatchExtractionLayer(10, interpolation=interpolation)
    assert layer.get_config()["interpolation"] == interpolation
    patches = mode.agrees_with_eager(
        layer, tf.constant(obj), tf.constant(positions), atol=_between_modes(interpolation)
    )
    assert patches.dtype == dtype
    if interpolation != "fourier":
        expected = oracle_patches(obj, positions, 10, interpolation)
        assert np.abs(patches[..., 0] - expected).max() <= TOLERANCE[dtype] * np.abs(obj).max()


def test_fourier_layer_on_many_positions(rng, mode):
    """The inputs of the former eager-versus-jit test of tests/test_kernel_fourier.py."""
    obj = random_object(rng, (50, 50))
    positions = rng.uniform(-5, 55, (300, 2)).astype(np.float32)
    layer = PatchExtractionLayer(16, interpolation="fourier")
    patches = mode.agrees_with_eager(
        layer, tf.constant(obj), tf.constant(positions), atol=FOURIER_ATOL
    )
    assert patches.shape == (300, 16, 16, 1)
    assert layer.get_config()["interpolation"] == "fourier"


def test_gradients_for_captured_variables(rng, mode):
    """Gradients for variables a step captures, not arguments: a training step's usual form
    (the former test of tests/test_windows_gradients.py)."""
    obj = tf.Variable(smooth_object((40, 40))[0, :, :, 0])
    positions = tf.Variable(positions_away_from_integers(rng, 20, 8, 30))

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.abs(extract_patches(obj, positions, 10)) ** 2)
        return tape.gradient(loss, [obj, positions])

    d_obj, d_pos = mode.agrees_with_eager(step, rtol=1e-12, atol=1e-12)
    assert d_obj.shape == (40, 40) and d_pos.shape == (20, 2)
    assert np.all(np.isfinite(d_obj)) and np.abs(d_pos).max() > 0


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_learnable_object_and_its_weight_gradients(rng, mode, interpolation):
    initial = random_object(rng, (24, 20))
    layer = LearnableObject((24, 20), 6, interpolation=interpolation, initial=initial)
    positions = edge_positions(rng, 24, 20, 6, 15)

    def forward_and_gradients(p):
        with tf.GradientTape() as tape:
            patches = layer(p)
            loss = tf.reduce_sum(tf.abs(patches) ** 2)
        return patches, tape.gradient(loss, layer.trainable_weights)

    atol = max(_between_modes(interpolation), _fused(mode, initial))
    patches, (d_real, d_imag) = mode.agrees_with_eager(
        forward_and_gradients, tf.constant(positions), atol=atol
    )
    assert patches.dtype == np.complex64 and d_real.shape == d_imag.shape == (24, 20)
    if interpolation != "fourier":
        expected = oracle_patches(initial, positions, 6, interpolation)
        assert np.abs(patches[..., 0] - expected).max() <= 1e-6 * np.abs(initial).max()
        # d/d(real, imag) of sum |A x|^2 is A^H (2 A x): the float64 overlap-add oracle.
        spread = numpy_overlap_add(2 * expected[..., None], positions, (24, 20), interpolation)
        scale = np.abs(spread).max()
        np.testing.assert_allclose(d_real + 1j * d_imag, spread, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per-sample"])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_extract_patches_gradients(rng, mode, interpolation, per_sample):
    """Object and position gradients of `sum |A x|^2 + Re <A x, y>` in complex128."""
    count, N, shape = 20, 10, (40, 40)
    obj = smooth_object(shape, count) if per_sample else smooth_object(shape)[0, :, :, 0]
    positions = positions_away_from_integers(rng, count, 8, 30)
    y = random_object(rng, (count, N, N, 1), np.complex128)

    def gradients(o, p):
        with tf.GradientTape() as tape:
            tape.watch([o, p])
            patches = extract_patches(o, p, N, interpolation)
            loss = tf.reduce_sum(tf.abs(patches) ** 2 + tf.math.real(patches * np.conj(y)))
        return tape.gradient(loss, [o, p])

    d_obj, d_pos = mode.agrees_with_eager(
        gradients, tf.constant(obj), tf.constant(positions), rtol=1e-12, atol=1e-12
    )
    assert d_obj.shape == obj.shape and d_pos.shape == positions.shape
    if interpolation == "fourier":
        return

    def oracle(pos):  # (count, N, N) patches, each of its own object when per sample
        if not per_sample:
            return oracle_patches(obj, pos, N, interpolation)
        return np.concatenate(
            [
                oracle_patches(o[:, :, 0], pos[k : k + 1], N, interpolation)
                for k, o in enumerate(obj)
            ]
        )

    # The object gradient is A^H (2 A x + y), with the float64 overlap-add as A^H.
    d_out = 2 * oracle(positions)[..., None] + y
    if per_sample:
        spread = np.stack(
            [
                numpy_overlap_add(d_out[k : k + 1], positions[k : k + 1], shape, interpolation)
                for k in range(count)
            ]
        )[..., None]
    else:
        spread = numpy_overlap_add(d_out, positions, shape, interpolation)
    np.testing.assert_allclose(d_obj, spread, rtol=0, atol=1e-10 * np.abs(spread).max())
    if interpolation == "bilinear":
        # Each patch's loss is quadratic in its position inside a pixel cell: central
        # differences of the oracle loss are exact up to rounding.
        def losses(pos):
            patches = oracle(pos)
            return np.sum(np.abs(patches) ** 2 + (patches * np.conj(y[..., 0])).real, axis=(1, 2))

        step = 1e-4
        numeric = np.stack(
            [
                (losses(positions + step * unit) - losses(positions - step * unit)) / (2 * step)
                for unit in np.eye(2)
            ],
            axis=1,
        )
        np.testing.assert_allclose(d_pos, numeric, rtol=1e-7, atol=1e-7 * np.abs(numeric).max())


# reassemble_patches ----------------------------------------------------------------------


def _normalized_oracle(patches, positions, shape, interpolation, min_weight=1e-3):
    """Float64 normalised reassembly: the overlap-add over the summed weights, zero below
    `min_weight`; also returns the weights."""
    ones = np.ones(np.shape(patches), np.float64)
    weights = numpy_overlap_add(ones, positions, shape, interpolation)
    total = numpy_overlap_add(patches, positions, shape, interpolation)
    covered = weights >= min_weight
    return np.where(covered, total / np.where(covered, weights, 1), 0), weights


@pytest.mark.parametrize("normalize", [False, True], ids=["sum", "normalized"])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_reassemble_patches(rng, mode, interpolation, normalize):
    shape, N = (23, 31), 8
    positions = edge_positions(rng, *shape, N, 31, np.float64)
    patches = random_object(rng, (len(positions), N, N, 1), np.complex128)

    def reassemble(q, p):
        return reassemble_patches(q, p, shape, normalize, interpolation)

    canvas = mode.agrees_with_eager(reassemble, patches, positions, atol=1e-12)
    assert canvas.dtype == np.complex128 and canvas.shape == shape
    if interpolation == "fourier":
        return
    if normalize:
        expected, weights = _normalized_oracle(patches, positions, shape, interpolation)
        clear = np.abs(weights - 1e-3) > 1e-9  # away from the `min_weight` threshold
        np.testing.assert_allclose(canvas[clear], expected[clear], rtol=0, atol=1e-9)
    else:
        expected = numpy_overlap_add(patches, positions, shape, interpolation)
        np.testing.assert_allclose(canvas, expected, rtol=0, atol=1e-12)


def test_reassembly_in_channel_format_agrees_with_flat(rng, mode):
    positions = rng.uniform(0, 30, (6, 1, 2, 4))
    patches = random_object(rng, (6, 7, 7, 4), np.complex128)
    flat_pos = np.transpose(positions[:, 0], (0, 2, 1)).reshape(-1, 2)
    flat = np.transpose(patches, (0, 3, 1, 2)).reshape(-1, 7, 7, 1)
    expected = reassemble_patches(flat, flat_pos, (30, 30)).numpy()

    def reassemble(q, p):
        return reassemble_patches(q, p, (30, 30))

    channel = mode.agrees_with_eager(reassemble, patches, positions, atol=1e-12)
    np.testing.assert_allclose(channel, expected, atol=1e-12)


@pytest.mark.parametrize("normalize", [False, True], ids=["sum", "normalized"])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_reassemble_patches_gradient(rng, mode, interpolation, normalize):
    """d/dp sum |canvas|^2 is extraction of 2 canvas (over the weights when normalised)."""
    shape = (20, 20)
    patches = random_object(rng, (5, 6, 6, 1), np.complex128)
    positions = rng.uniform(3, 17, (5, 2))

    def gradient(q, p):
        with tf.GradientTape() as tape:
            tape.watch(q)
            canvas = reassemble_patches(q, p, shape, normalize, interpolation)
            loss = tf.reduce_sum(tf.abs(canvas) ** 2)
        return tape.gradient(loss, q)

    grad = mode.agrees_with_eager(
        gradient, tf.constant(patches), tf.constant(positions), rtol=1e-12, atol=1e-12
    )
    assert grad.shape == patches.shape
    if interpolation == "fourier":
        return
    if normalize:
        canvas, weights = _normalized_oracle(patches, positions, shape, interpolation)
        adjoint = np.where(weights >= 1e-3, 2 * canvas / np.where(weights > 0, weights, 1), 0)
    else:
        adjoint = 2 * numpy_overlap_add(patches, positions, shape, interpolation)
    expected = oracle_patches(adjoint, positions, 6, interpolation)[..., None]
    np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-10 * np.abs(expected).max())


# Legacy entry points ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.complex64, np.float32])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_translate(rng, mode, interpolation, dtype):
    imgs = _object(rng, (2, 16, 16, 1), dtype)
    offsets = rng.uniform(-3, 3, (2, 2)).astype(np.float32)

    def translate(i, o):
        return tf_helper.translate(i, o, interpolation)

    # Complex images agree with eager bit for bit, as tests/test_tf_helper.py always asserted.
    fused = _fused(mode, imgs) if dtype == np.float32 else 0.0
    atol = max(_between_modes(interpolation), fused)
    out = mode.agrees_with_eager(translate, tf.constant(imgs), tf.constant(offsets), atol=atol)
    assert out.dtype == dtype and out.shape == imgs.shape
    if interpolation == "bilinear":
        for b, (dx, dy) in enumerate(offsets.astype(np.float64)):
            img = imgs[b, :, :, 0].astype(np.complex128)
            expected = sum(
                unit * nd_shift(part, (dy, dx), order=1, mode="grid-constant", cval=0.0)
                for unit, part in ((1, img.real), (1j, img.imag))
            )
            assert np.abs(out[b, :, :, 0] - expected).max() <= 1e-6 * np.abs(imgs).max()


# `get_image_patches` with `use_batched_patch_extraction=False` runs the preserved legacy loop,
# which copies every patch out through `.numpy()`: eager only by design, and tested eagerly
# in tests/test_raw_data.py. The batched path traces.
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_get_image_patches(rng, mode, dtype):
    N, gridsize, B = 12, 2, 4
    c = gridsize**2
    obj = random_object(rng, (33, 41), dtype)
    global_offsets = rng.uniform(-6, 45, (B, 1, 2, 1)).astype(REAL_OF[dtype])
    local_offsets = rng.uniform(-3, 3, (B, 1, 2, c)).astype(REAL_OF[dtype])
    config = ModelConfig(N=N, gridsize=gridsize, use_batched_patch_extraction=True)

    def patches_of(o, g, loc):
        return raw_data.get_image_patches(o, g, loc, config=config)

    patches = mode.agrees_with_eager(
        patches_of, obj, global_offsets, local_offsets, atol=_fused(mode, obj)
    )
    assert patches.dtype == dtype and patches.shape == (B, N, N, c)
    positions = (global_offsets + local_offsets)[:, 0].transpose(0, 2, 1).reshape(-1, 2)
    expected = oracle_patches(obj, positions, N).reshape(B, c, N, N).transpose(0, 2, 3, 1)
    assert np.abs(patches - expected).max() <= TOLERANCE[dtype] * np.abs(obj).max()
