"""Property-based tests over random shapes, dtypes and positions (hypothesis).

CI runs a bounded, derandomized number of examples; `HYPOTHESIS_PROFILE=long` runs many
more (see `conftest.py`).
"""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import oracle_patches

from ptycho import extract_patches, raw_data, reassemble_patches, tf_helper
from ptycho.layers import PatchExtractionLayer

DTYPES = [np.complex64, np.complex128, np.float32, np.float64]
TOLERANCE = {np.complex64: 1e-6, np.float32: 1e-6, np.complex128: 1e-12, np.float64: 1e-12}
POSITION_DTYPE = {np.complex64: np.float32, np.float32: np.float32}


def coordinate(extent, N):
    """Inside, on and beyond every edge, far away; integers and half-integers."""
    reach = N // 2 + 2
    return st.one_of(
        st.floats(-reach, extent - 1 + reach, allow_nan=False, width=32),
        st.integers(-reach, extent - 1 + reach).map(float),
        st.integers(-reach, extent - 1 + reach).map(lambda v: v + 0.5),
        st.sampled_from([0.0, extent - 1.0, -0.5, extent - 0.5, -1e6, 1e6, 3e9]),
    )


@st.composite
def cases(draw, max_n=96, max_side=300, max_count=500, dtypes=DTYPES):
    dtype = draw(st.sampled_from(dtypes))
    N = draw(st.integers(1, max_n))
    height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    count = draw(st.integers(1, max_count))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    obj = rng.standard_normal((height, width))
    if np.dtype(dtype).kind == "c":
        obj = obj + 1j * rng.standard_normal((height, width))
    obj = obj.astype(dtype)
    xs = draw(st.lists(coordinate(width, N), min_size=count, max_size=count))
    ys = draw(st.lists(coordinate(height, N), min_size=count, max_size=count))
    positions = np.stack([xs, ys], axis=1).astype(POSITION_DTYPE.get(dtype, np.float64))
    return obj, positions, N


@given(cases(), st.sampled_from(["bilinear", "nearest"]))
def test_every_output_equals_the_float64_oracle(case, interpolation):
    obj, positions, N = case
    patches = extract_patches(obj, positions, N, interpolation).numpy()[..., 0]
    assert patches.dtype == obj.dtype
    expected = oracle_patches(obj, positions, N, interpolation)
    scale = max(np.abs(obj).max(), np.finfo(np.float64).tiny)
    assert np.abs(patches - expected).max() <= TOLERANCE[obj.dtype.type] * scale


@given(cases(max_n=32, max_side=80, max_count=12, dtypes=[np.complex64, np.complex128]))
def test_iterative_and_batched_agree(case):
    obj, positions, N = case
    c = 1 if len(positions) % 4 else 4
    B = len(positions) // c
    offsets_f = positions.reshape(B * c, 1, 2, 1)
    gt_padded = tf_helper.pad(tf.constant(obj[None, :, :, None]), N // 2)
    loop = raw_data._get_image_patches_iterative(gt_padded, offsets_f, N, B, c).numpy()
    batched = raw_data._get_image_patches_batched(gt_padded, offsets_f, N, B, c).numpy()
    np.testing.assert_allclose(batched, loop, rtol=0, atol=TOLERANCE[obj.dtype.type] * 10)


# The `mode` fixture holds no state, so hypothesis may share it between examples.
@pytest.mark.parametrize("mode", ["jit"], indirect=True)  # every mode: tests/test_modes.py
@settings(
    suppress_health_check=[*settings().suppress_health_check, HealthCheck.function_scoped_fixture]
)
@given(case=cases(max_count=200))
def test_eager_and_xla_agree(mode, case):
    obj, positions, N = case
    layer = PatchExtractionLayer(N, dtype=obj.real.dtype.name)
    scale = max(np.abs(obj).max(), 1e-300)
    tolerance = TOLERANCE[obj.dtype.type] * scale
    mode.agrees_with_eager(layer, tf.constant(obj), tf.constant(positions), atol=tolerance)


@given(cases(max_n=48, max_side=120, max_count=100, dtypes=[np.complex128]))
def test_the_adjoint_identity_holds(case):
    x, positions, N = case
    y = np.random.default_rng(len(positions)).standard_normal((len(positions), N, N, 1)) + 0j
    ax = extract_patches(x, positions, N).numpy()
    ahy = reassemble_patches(y, positions, x.shape, normalize=False).numpy()
    lhs, rhs = np.vdot(y, ax), np.vdot(ahy, x)
    assert abs(lhs - rhs) <= 1e-10 * np.linalg.norm(ax) * np.linalg.norm(y) + 1e-300


@given(cases(max_n=40, max_side=120, max_count=60, dtypes=[np.complex64, np.complex128]))
def test_reassembly_inverts_extraction_on_covered_pixels(case):
    obj, positions, N = case
    positions = np.clip(np.round(positions), -N, max(obj.shape) + N)  # integer positions
    canvas = reassemble_patches(extract_patches(obj, positions, N), positions, obj.shape).numpy()
    covered = np.zeros(obj.shape, bool)
    for x, y in positions.astype(int):
        top, left = max(y - N // 2, 0), max(x - N // 2, 0)
        covered[top : max(y - N // 2 + N, 0), left : max(x - N // 2 + N, 0)] = True
    scale = max(np.abs(obj).max(), 1e-300)
    error = np.abs(canvas - obj)[covered].max(initial=0) / scale
    assert error <= 10 * TOLERANCE[obj.dtype.type]
    assert np.all(canvas[~covered] == 0)
