"""Exact gradients for the object and the positions, for every object and position form."""

import numpy as np
import pytest
import tensorflow as tf
from support import positions_away_from_integers, random_object, smooth_object

from ptycho import extract_patches

INTERPOLATIONS = ["bilinear", "fourier"]


def finite_difference(loss, positions, index, step=1e-4):
    plus, minus = positions.copy(), positions.copy()
    plus[index] += step
    minus[index] -= step
    return (loss(plus) - loss(minus)) / (2 * step)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("channel", [False, True])
def test_position_gradient_matches_central_differences(rng, interpolation, per_sample, channel):
    """On a smooth object, away from integer crossings: 1e-5 relative."""
    count, c, N = 3, 4, 12
    flat = positions_away_from_integers(rng, count * c, 14, 34)
    if channel:
        positions = np.transpose(flat.reshape(count, c, 2), (0, 2, 1))[:, None]  # (B,1,2,c)
    else:
        positions = flat
    samples = count if channel else count * c
    obj = smooth_object((48, 48), samples if per_sample else 1)
    weights = random_object(rng, (samples, N, N, c if channel else 1), np.complex128)

    def loss(pos):
        patches = extract_patches(obj, pos, N, interpolation)
        return tf.reduce_sum(tf.math.real(patches * weights) + tf.abs(patches) ** 2)

    pos_var = tf.Variable(positions)
    with tf.GradientTape() as tape:
        value = loss(pos_var)
    grad = tape.gradient(value, pos_var).numpy()
    for index in (
        [(0, 0), (1, 1), (samples - 1, 0)]
        if not channel
        else [
            (0, 0, 0, 0),
            (1, 0, 1, 2),
            (count - 1, 0, 0, c - 1),
        ]
    ):
        numeric = float(finite_difference(lambda p: loss(p).numpy(), positions, index))
        assert abs(grad[index] - numeric) <= 1e-5 * abs(numeric), (index, grad[index], numeric)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "fourier"])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("channel", [False, True])
def test_object_gradient_is_the_adjoint(rng, interpolation, per_sample, channel):
    """<A x, y> = <x, A^H y> to 1e-10 in complex128, with A^H from the gradient tape."""
    count, c, N = 3, 4, 9
    if channel:
        positions = rng.uniform(-6, 30, (count, 1, 2, c))
        samples, out_c = count, c
    else:
        positions = rng.uniform(-6, 30, (count * c, 2))
        samples, out_c = count * c, 1
    x = tf.constant(random_object(rng, (samples if per_sample else 1, 24, 26, 1), np.complex128))
    y = random_object(rng, (samples, N, N, out_c), np.complex128)
    with tf.GradientTape() as tape:
        tape.watch(x)
        ax = extract_patches(x, positions, N, interpolation)
        inner = tf.math.real(tf.reduce_sum(ax * np.conj(y)))
    ahy = tape.gradient(inner, x).numpy()
    lhs, rhs = np.vdot(y, ax.numpy()), np.vdot(ahy, x.numpy())
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_windows_are_computed_once_in_a_jitted_training_step(rng):
    """XLA fuses the kernel into every consumer of the windows unless a conditional stands
    between them (`_kernel.separately`); before TensorFlow 2.20 XLA would run that
    conditional's loops on one thread, so there the step has none."""
    from ptycho import PatchExtractionLayer, _kernel

    obj = tf.constant(random_object(rng, (40, 40), np.complex64))
    positions = tf.constant(rng.uniform(0, 40, (6, 2)).astype(np.float32))
    layer = PatchExtractionLayer(8)

    @tf.function(jit_compile=True)
    def step(o, p):
        with tf.GradientTape() as tape:
            tape.watch([o, p])
            loss = tf.reduce_sum(tf.abs(layer(o, p)) ** 2)
        return tape.gradient(loss, [o, p])

    hlo = step.experimental_get_compiler_ir(obj, positions)(stage="optimized_hlo")
    on_cpu = not tf.config.list_logical_devices("GPU")
    assert (" conditional(" in hlo) == (_kernel.SEPARATES and on_cpu)


def _training_step(layer, jit_compile):
    @tf.function(jit_compile=jit_compile)
    def step(o, p):
        with tf.GradientTape() as tape:
            tape.watch([o, p])
            patches = layer(o, p)
            loss = tf.reduce_sum(tf.abs(patches) ** 2)
        return (patches, *tape.gradient(loss, [o, p]))

    return step


def test_a_graph_not_compiled_by_xla_has_no_conditional(rng):
    """Outside an XLA program each kernel is compiled alone: nothing to keep apart."""
    from ptycho import PatchExtractionLayer

    obj = tf.constant(random_object(rng, (40, 40), np.complex64))
    positions = tf.constant(rng.uniform(0, 40, (6, 2)).astype(np.float32))
    graph = _training_step(PatchExtractionLayer(8), False).get_concrete_function(obj, positions)
    types = {op.type for op in graph.graph.get_operations()}
    assert not types & {"If", "StatelessIf"}, types


@pytest.mark.parametrize("device, separates", [("/CPU:0", True), ("/GPU:0", False)])
def test_conditionals_only_on_the_cpu(monkeypatch, device, separates):
    """On a GPU an XLA conditional waits for its predicate on the host."""
    from ptycho import _kernel

    monkeypatch.setattr(_kernel, "SEPARATES", True)
    seen = []

    @tf.function(jit_compile=True)
    def probe(p):
        with tf.device(device):
            seen.append(_kernel._separates_here(tf.reduce_all(tf.math.is_finite(p))))
        return p

    probe.get_concrete_function(tf.TensorSpec([3, 2], tf.float32))
    assert seen == [separates]


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_non_finite_positions_give_the_same_result_through_the_conditionals(
    rng, monkeypatch, interpolation, dtype
):
    """A NaN or infinite position, which only an XLA program lets through, makes its
    patch and its gradients NaN, the same with the conditionals as without them; every
    other value agrees to rounding."""
    from ptycho import PatchExtractionLayer, _kernel

    real = np.float32 if dtype == np.complex64 else np.float64
    obj = tf.constant(random_object(rng, (40, 40), dtype))
    values = rng.uniform(0, 40, (6, 2)).astype(real)
    values[1, 0], values[4, 1] = np.nan, np.inf
    positions = tf.constant(values)
    results, conditionals = {}, {}
    adjoint = _kernel.gather_windows_vjp.python_function
    for separates in (True, False):
        monkeypatch.setattr(_kernel, "SEPARATES", separates)
        # A fresh adjoint: the module's is traced once, with the first setting.
        fresh = tf.function(adjoint, jit_compile=True, autograph=False)
        monkeypatch.setattr(_kernel, "gather_windows_vjp", fresh)
        step = _training_step(PatchExtractionLayer(8, interpolation=interpolation), True)
        results[separates] = [t.numpy() for t in step(obj, positions)]
        hlo = step.experimental_get_compiler_ir(obj, positions)(stage="hlo")
        conditionals[separates] = hlo.count(" conditional(")
    assert conditionals == {True: 3, False: 0}
    tolerance = 1e-5 if dtype == np.complex64 else 1e-12
    for with_cond, without in zip(results[True], results[False], strict=True):
        np.testing.assert_array_equal(np.isnan(with_cond), np.isnan(without))
        scale = np.nanmax(np.abs(without))
        np.testing.assert_allclose(with_cond, without, rtol=0, atol=tolerance * scale)
    patches, _, d_pos = results[True]
    assert np.isnan(patches[[1, 4]]).all() and not np.isnan(patches[[0, 2, 3, 5]]).any()
    assert np.isnan(d_pos[[1, 4]]).all()
