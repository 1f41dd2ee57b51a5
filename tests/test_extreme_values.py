"""Values at the edges of the floating-point range, non-finite positions, and small inputs.

Overflow: neighbouring values near the float maximum, Fourier transforms of large objects
and overlapping large patches must give the finite true result. Non-finite positions:
eager calls raise `ValueError`, graphs (`tf.function`, `tf.data`) raise
`InvalidArgumentError` when run, and XLA-compiled functions, where TensorFlow drops run-time
checks, give all-NaN patches, never a valid-looking one.
"""

import numpy as np
import pytest
import tensorflow as tf
from support import Mode, oracle_patches

from ptycho import _kernel, ops, raw_data, tf_helper

INTERPOLATIONS = ("bilinear", "nearest", "fourier")
# Tests take the `mode` fixture (conftest.py): every execution mode, or those picked with
# `indirect=True`.


def checkerboard(size, value, dtype):
    signs = np.where(np.add.outer(np.arange(size), np.arange(size)) % 2 == 0, 1.0, -1.0)
    return (signs * value + 1j * signs * value).astype(dtype)


POSITIONS = np.array([[8.0, 8.0], [7.5, 9.25], [3.125, 12.0], [0.0, 15.0], [8.75, 0.5]])


# Overflow in the bilinear blend ----------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("mode", ["eager", "jit"], indirect=True)
def test_checkerboard_near_the_float_maximum_matches_the_oracle(interpolation, mode):
    obj = checkerboard(16, 2e38, np.complex64)  # neighbours differ by 4e38 > float max
    positions = POSITIONS.astype(np.float32)
    patches = mode(lambda o, p: ops.extract_patches(o, p, 6, interpolation))(obj, positions)
    patches = patches.numpy()[..., 0]
    assert np.isfinite(patches).all()
    expected = oracle_patches(obj, positions, 6, interpolation)
    assert np.abs(patches - expected).max() <= 1e-6 * np.abs(obj).max()
    np.testing.assert_array_equal(patches[0], obj[5:11, 5:11])  # integer position: exact


@pytest.mark.parametrize(
    ("dtype", "exponent"), [(np.complex64, 127), (np.complex128, 1023), (np.float32, 127)]
)
def test_bilinear_patches_scale_exactly_with_a_power_of_two(dtype, exponent):
    # `(1 - f) * a + f * b` scales exactly by powers of two, up to the float maximum.
    small = checkerboard(16, 1.5, np.complex128)
    small = (small.real if dtype == np.float32 else small).astype(dtype)
    large = small * dtype(2.0**exponent)
    assert np.isfinite(large).all()
    positions = POSITIONS.astype(np.float64)
    got = ops.extract_patches(large, positions, 6).numpy()
    want = ops.extract_patches(small, positions, 6).numpy() * dtype(2.0**exponent)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, want)


def test_bilinear_gradients_near_the_float_maximum(rng, mode):
    # Neighbours differ by 3e38 (finite) and the patch gradient by 4e38 (overflows).
    obj = tf.constant(checkerboard(16, 1.5e38, np.complex64))
    positions = tf.constant([[7.25, 8.5]], tf.float32)
    d_out = tf.constant(checkerboard(6, 2e38, np.complex64)[None, :, :, None])
    v = rng.uniform(0, 1e-3, (6, 6)).astype(np.float32)

    def grads(o, p):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([o, p])
            out = ops.extract_patches(o, p, 6)
            loss_obj = tf.reduce_sum(tf.math.real(out * tf.math.conj(d_out)))
            loss_pos = tf.reduce_sum(tf.math.real(out)[0, :, :, 0] * v)
        return tape.gradient(loss_obj, o), tape.gradient(loss_pos, p)

    d_obj, d_pos = (g.numpy() for g in mode(grads)(obj, positions))
    # The object gradient is the adjoint: spread d_out with the same weights, in float64.
    spread = np.zeros((16, 16), np.complex128)
    x0, fx, y0, fy = 7 - 3, 0.25, 8 - 3, 0.5
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            rows, cols = slice(y0 + dy, y0 + dy + 6), slice(x0 + dx, x0 + dx + 6)
            spread[rows, cols] += wy * wx * d_out.numpy()[0, :, :, 0]
    assert np.isfinite(d_obj).all()
    assert np.abs(d_obj - spread).max() <= 1e-6 * 2e38
    # Position gradient, in float64: d out / d x blends two column differences (here they
    # cancel, fy = 1/2), d out / d y two row differences; both are finite.
    real = obj.numpy().real.astype(np.float64)[y0 : y0 + 7, x0 : x0 + 7]
    d_x = (1 - fy) * (real[:-1, 1:] - real[:-1, :-1]) + fy * (real[1:, 1:] - real[1:, :-1])
    d_y = (1 - fx) * (real[1:, :-1] - real[:-1, :-1]) + fx * (real[1:, 1:] - real[:-1, 1:])
    expected = np.array([(v * d_x).sum(), (v * d_y).sum()])
    assert np.isfinite(d_pos).all() and abs(expected[1]) > 1e33
    np.testing.assert_allclose(d_pos[0], expected, rtol=0, atol=1e-6 * np.abs(v).sum() * 3e38)


# Overflow in the Fourier transform -------------------------------------------------------


def test_fourier_of_a_large_object_is_finite(mode, rng):
    base = (rng.standard_normal((48, 48)) + 1j * rng.standard_normal((48, 48))).astype(np.complex64)
    positions = rng.uniform(10, 38, (5, 2)).astype(np.float32)

    def extract(o, p):
        return ops.extract_patches(o, p, 8, "fourier")

    scale = np.float32(2.0**119)  # 6.6e35: footprint sums of 48 x 48 such values overflow
    large = mode(extract)(base * scale, positions).numpy()
    small = mode(extract)(base, positions).numpy()
    assert np.isfinite(large).all()
    np.testing.assert_array_equal(large, small * scale)  # exact: a power of two
    ones = np.ones((48, 48), np.complex64)
    huge = mode(extract)(ones * np.float32(1e36), positions).numpy()
    assert np.isfinite(huge).all()
    np.testing.assert_allclose(huge, mode(extract)(ones, positions).numpy() * 1e36, rtol=1e-6)


@pytest.mark.parametrize("mode", ["eager", "jit"], indirect=True)
def test_fourier_gradients_do_not_depend_on_the_object_scale(mode, rng):
    base = (rng.standard_normal((40, 40)) + 1j * rng.standard_normal((40, 40))).astype(np.complex64)
    positions = tf.constant(rng.uniform(12, 28, (3, 2)), tf.float32)
    weights = tf.constant(rng.standard_normal((3, 8, 8, 1)).astype(np.complex64))

    def grads(o, p):
        with tf.GradientTape() as tape:
            tape.watch([o, p])
            out = ops.extract_patches(o, p, 8, "fourier")
            loss = tf.reduce_sum(tf.math.real(out * tf.math.conj(weights)))
        return tape.gradient(loss, [o, p])

    d_obj_1, d_pos_1 = (g.numpy() for g in mode(grads)(tf.constant(base), positions))
    # 1e36: the object gradient (independent of the object) must not overflow.
    d_obj_big, _ = (g.numpy() for g in mode(grads)(tf.constant(base * 1e36), positions))
    np.testing.assert_array_equal(d_obj_big, d_obj_1)
    # The position gradient is linear in the object: exact under a power of two.
    scale = np.float32(2.0**100)
    _, d_pos_big = (g.numpy() for g in mode(grads)(tf.constant(base * scale), positions))
    assert np.isfinite(d_pos_1).all() and np.abs(d_pos_1).max() > 0
    np.testing.assert_array_equal(d_pos_big, d_pos_1 * scale)


def test_power_of_two_scales_are_exact_and_safe():
    from ptycho._kernel import power_of_two_scales

    for dtype, big in ((np.float32, 3.4e38), (np.float64, 1.7e308)):
        peaks = np.array([0.0, 1e-44, 1.0, 3.0, 1e36, big, np.inf, np.nan], dtype)
        down, up = (v.numpy() for v in power_of_two_scales(tf.constant(peaks)))
        np.testing.assert_array_equal(down * up, 1.0)
        mantissa, _ = np.frexp(np.concatenate([down, up]))
        np.testing.assert_array_equal(mantissa, 0.5)  # powers of two
        normal = (peaks >= np.finfo(dtype).tiny) & np.isfinite(peaks)
        scaled = peaks[normal] * down[normal]
        assert ((scaled >= 1) & (scaled < 4)).all()


# Overflow in reassembly -------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("mode", ["eager", "jit"], indirect=True)
def test_reassembling_overlapping_patches_near_the_float_maximum(interpolation, mode):
    positions = np.array([[8.0, 8.0], [9.0, 8.0]], np.float32)
    canvas = mode(lambda p, q: ops.reassemble_patches(p, q, (16, 16), interpolation=interpolation))(
        np.full((2, 4, 4, 1), 3e38, np.complex64), positions
    ).numpy()
    assert np.isfinite(canvas).all()
    covered = np.abs(canvas) > 0
    assert covered[8, 7:10].all()
    np.testing.assert_allclose(canvas[covered], 3e38, rtol=1e-5)
    # Unnormalised: 3e38 + 3e38 - 3e38 overflows in order, not in the true sum.
    signs = np.array([1, 1, -1], np.float32)[:, None, None, None]
    total = ops.reassemble_patches(
        np.full((3, 4, 4, 1), 3e38, np.float32) * signs,
        np.full((3, 2), 8.0, np.float32),
        (16, 16),
        normalize=False,
        interpolation=interpolation,
    ).numpy()
    assert np.isfinite(total).all()
    np.testing.assert_allclose(total[8, 8], 3e38, rtol=1e-5)


def test_reassembly_gradient_does_not_depend_on_the_patch_scale(rng, mode):
    positions = tf.constant([[8.25, 8.0], [9.5, 7.75]], tf.float32)
    weights = tf.constant(rng.standard_normal((16, 16)).astype(np.float32))

    def grad(p):
        with tf.GradientTape() as tape:
            tape.watch(p)
            canvas = ops.reassemble_patches(p, positions, (16, 16))
            loss = tf.reduce_sum(canvas * weights)
        return tape.gradient(loss, p)

    unit = mode(grad)(tf.ones((2, 4, 4, 1))).numpy()
    huge = mode(grad)(tf.fill((2, 4, 4, 1), 3e38)).numpy()
    assert np.abs(unit).max() > 0
    np.testing.assert_array_equal(huge, unit)


# Non-finite positions --------------------------------------------------------------------


def _positions_with(bad):
    positions = np.array([[6.0, 7.5], [9.25, 8.0], [8.0, 8.0]], np.float32)
    positions[1, 0] = bad
    return positions


OBJ = (np.arange(256).reshape(16, 16) + 1j).astype(np.complex64)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_non_finite_positions_raise_in_a_graph(bad, interpolation):
    positions = _positions_with(bad)
    with pytest.raises(ValueError, match="`positions` must be finite"):
        ops.extract_patches(OBJ, positions, 4, interpolation)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`positions` must be finite"):
        Mode("tf.function")(lambda o, p: ops.extract_patches(o, p, 4, interpolation))(
            OBJ, positions
        )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_non_finite_positions_give_nan_patches_under_xla(bad, interpolation):
    positions = _positions_with(bad)

    def extract(o, p):
        return ops.extract_patches(o, p, 4, interpolation)

    patches = Mode("jit")(extract)(OBJ, positions).numpy()
    assert np.isnan(patches[1]).all()
    good = positions[[0, 2]]
    np.testing.assert_array_equal(patches[[0, 2]], Mode("jit")(extract)(OBJ, good).numpy())


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_non_finite_positions_give_nan_gradients_under_xla(interpolation):
    positions = tf.constant(_positions_with(np.nan))

    def grads(o, p):
        with tf.GradientTape() as tape:
            tape.watch([o, p])
            loss = tf.reduce_sum(tf.math.real(ops.extract_patches(o, p, 4, interpolation)))
        return tape.gradient(loss, [o, p])

    d_obj, d_pos = (g.numpy() for g in Mode("jit")(grads)(tf.constant(OBJ), positions))
    assert np.isnan(d_pos[1]).all()
    assert np.isfinite(d_pos[[0, 2]]).all()
    assert np.isnan(d_obj).any()  # the NaN patch's gradient is not spread silently


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_non_finite_positions_raise_in_a_dataset_map(interpolation):
    positions = _positions_with(np.nan)[:, None, :, None]  # three groups of one
    dataset = tf.data.Dataset.from_tensor_slices(positions).batch(3)
    dataset = dataset.map(lambda p: ops.extract_patches(OBJ, p, 4, interpolation))
    with pytest.raises(tf.errors.InvalidArgumentError, match="`positions` must be finite"):
        next(iter(dataset))
    finite = tf.data.Dataset.from_tensor_slices(np.full((3, 1, 2, 1), 8.0, np.float32)).batch(3)
    finite = finite.map(lambda p: ops.extract_patches(OBJ, p, 4, interpolation))
    assert next(iter(finite)).shape == (3, 4, 4, 1)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_huge_finite_positions_give_zero_patches(interpolation, mode):
    positions = np.array([[1e30, 8.0], [-1e30, 1e30], [8.0, 8.0]], np.float32)
    patches = mode(lambda o, p: ops.extract_patches(o, p, 4, interpolation))(OBJ, positions)
    patches = patches.numpy()
    np.testing.assert_array_equal(patches[:2], 0)
    assert np.abs(patches[2]).min() > 0


def test_non_finite_offsets_and_reassembly_positions_raise_in_a_graph():
    bad = _positions_with(np.nan)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`offsets` must be finite"):
        Mode("tf.function")(tf_helper.translate)(np.ones((3, 8, 8, 1), np.float32), bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`positions` must be finite"):
        Mode("tf.function")(lambda p, q: ops.reassemble_patches(p, q, (16, 16)))(
            np.ones((3, 4, 4, 1), np.float32), bad
        )


# Small inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
def test_translate_by_the_most_negative_integer(dtype):
    low = int(np.iinfo(dtype).min)
    # A wide single row, so that the shift by -128 (int8) or -32768 (int16) stays visible.
    width = 2 * min(-low, 2**15) + 8
    img = np.zeros((1, 1, width, 1), np.float32)
    img[0, 0, width - 4] = 1.0
    for dx in (low, -128, 127):
        out = tf_helper.translate(img, np.array([[dx, 0]], dtype)).numpy()[0, 0, :, 0]
        target = width - 4 + dx
        expected = np.zeros(width, np.float32)
        if 0 <= target < width:
            expected[target] = 1.0
        np.testing.assert_array_equal(out, expected, err_msg=f"{dtype.__name__} {dx}")


@pytest.mark.parametrize(
    ("offsets", "dtype"),
    [
        (np.array([[[[3 + 1j], [3]]]]), "complex128"),
        (np.ones((1, 1, 2, 1), bool), "bool"),
        (np.array([[[["3"], ["3"]]]]), "string"),
    ],
)
def test_get_image_patches_requires_real_offsets(offsets, dtype):
    obj = np.ones((16, 16), np.complex64)
    zeros = np.zeros((1, 1, 2, 1), np.float32)
    for name, args in (("global_offsets", (offsets, zeros)), ("local_offsets", (zeros, offsets))):
        with pytest.raises(
            TypeError, match=f"`{name}` must be a real number.*{name}.dtype={dtype}"
        ):
            raw_data.get_image_patches(obj, *args, N=4, gridsize=1)
    patches = raw_data.get_image_patches(
        obj, np.full((1, 1, 2, 1), 8, np.int64), zeros, N=4, gridsize=1
    )
    assert patches.shape == (1, 4, 4, 1)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_groups_without_patches_give_empty_results(interpolation, mode):
    positions = np.zeros((3, 1, 2, 0), np.float32)  # as flat (0, 2) positions give (0, N, N, 1)

    def both(o, p):
        with tf.GradientTape() as tape:
            tape.watch(o)
            patches = ops.extract_patches(o, p, 4, interpolation)
            loss = tf.reduce_sum(tf.abs(patches))
        d_obj = tape.gradient(loss, o)
        canvas = ops.reassemble_patches(patches, p, (16, 16), interpolation=interpolation)
        return patches, d_obj, canvas

    patches, d_obj, canvas = (t.numpy() for t in mode(both)(tf.constant(OBJ), positions))
    assert patches.shape == (3, 4, 4, 0) and patches.dtype == np.complex64
    np.testing.assert_array_equal(d_obj, 0)
    np.testing.assert_array_equal(canvas, 0)
    assert ops.extract_patches(OBJ, np.zeros((0, 2), np.float32), 4).shape == (0, 4, 4, 1)


@pytest.mark.parametrize(
    ("min_weight", "error"),
    [
        (np.nan, ValueError),
        (-1, ValueError),
        (np.inf, ValueError),
        (-1e-9, ValueError),
        ("0.5", TypeError),
        (None, TypeError),
        (True, TypeError),
        ([0.5], TypeError),
    ],
)
def test_min_weight_must_be_a_finite_non_negative_number(min_weight, error):
    with pytest.raises(
        error, match=r"`min_weight` must be a finite number >= 0. Received: min_weight="
    ):
        ops.reassemble_patches(
            np.ones((1, 4, 4, 1)), np.full((1, 2), 8.0), (16, 16), min_weight=min_weight
        )


def test_min_weight_zero_keeps_every_covered_pixel_and_zeroes_the_rest():
    canvas = ops.reassemble_patches(
        np.full((1, 4, 4, 1), 2.0, np.float32),
        np.array([[8.5, 8.0]], np.float32),
        (16, 16),
        min_weight=np.float32(0.0),
    ).numpy()
    assert np.isfinite(canvas).all()
    np.testing.assert_allclose(canvas[6:10, 6:11], 2.0, rtol=1e-6)  # edge columns half-weighted
    assert (canvas == 0).sum() == 16 * 16 - 4 * 5


# Memory estimate -------------------------------------------------------------------------


def test_fourier_memory_estimate_counts_the_transform_buffers():
    table = (512 + 2 * 96) ** 2
    fourier = _kernel.request_elements((512, 512), 1, 4096, 64, "fourier", tf.complex64)
    assert fourier == 4096 * (64 * 64 + 2 * 96 * 96) + table  # two complex64 footprints
    real = _kernel.request_elements((512, 512), 1, 4096, 64, "fourier", tf.float32)
    assert real == 4096 * (64 * 64 + 4 * 96 * 96) + table  # complex64 is two float32
    chunk = _kernel.request_elements((512, 512), 1, 4096, 64, "fourier", tf.complex64, buffered=256)
    assert chunk == 4096 * 64 * 64 + 256 * 2 * 96 * 96 + table


@pytest.mark.parametrize("mode", ["eager", "tf.function"], indirect=True)
def test_fourier_requests_beyond_memory_are_refused(mode, monkeypatch):
    from ptycho import _memory

    # The output (64 x 32 x 32 complex64, 0.5 MiB) fits; the transform buffers (4.5 MiB) do not.
    monkeypatch.setattr(_memory, "available_memory", lambda: 2 * 2**20)
    obj = np.ones((64, 64), np.complex64)
    positions = np.full((64, 2), 30.0, np.float32)
    assert mode(lambda o, p: ops.extract_patches(o, p, 32))(obj, positions).shape[0] == 64
    with pytest.raises(ValueError, match="the patches would need"):
        mode(lambda o, p: ops.extract_patches(o, p, 32, "fourier"))(obj, positions)


def test_a_non_finite_value_stays_local():
    """A NaN or infinite value must not change the scale of everything else: the canvas
    away from a NaN patch, and a Fourier patch away from an infinite pixel, are unchanged."""
    rng = np.random.default_rng(3)
    patches = rng.standard_normal((3, 8, 8, 1)).astype(np.float32)
    positions = np.array([[4.0, 4.0], [28.0, 28.0], [30.5, 20.25]], np.float32)
    clean = ops.reassemble_patches(patches, positions, (40, 40)).numpy()
    for bad in (np.nan, np.inf):
        damaged = patches.copy()
        damaged[0, 3, 3, 0] = bad
        canvas = ops.reassemble_patches(damaged, positions, (40, 40)).numpy()
        np.testing.assert_array_equal(canvas[16:, 16:], clean[16:, 16:])
    obj = (rng.standard_normal((64, 64)) + 1j * rng.standard_normal((64, 64))).astype(np.complex64)
    far = np.array([[40.3, 40.2]], np.float32)  # its footprint, N + 32 wide, misses (2, 2)
    expected = ops.extract_patches(obj, far, 8, "fourier").numpy()
    obj[2, 2] = np.inf
    np.testing.assert_array_equal(ops.extract_patches(obj, far, 8, "fourier").numpy(), expected)
