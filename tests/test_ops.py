"""PatchExtractionLayer and extract_patches against the float64 oracle of the contract."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import edge_positions, oracle_patches, random_object

from ptycho import _eager, _kernel, _windows, extract_patches
from ptycho.layers import PatchExtractionLayer

TOLERANCE = {np.complex64: 1e-6, np.complex128: 1e-12}
REAL_OF = {np.complex64: np.float32, np.complex128: np.float64}


def worst_error(patches, obj, positions, N, interpolation="bilinear"):
    expected = oracle_patches(obj, positions, N, interpolation)
    return np.abs(np.asarray(patches)[..., 0] - expected).max() / np.abs(obj).max()


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("N", [1, 2, 5, 16, 33])
def test_matches_oracle_with_patches_over_every_edge(rng, dtype, N):
    obj = random_object(rng, (37, 29), dtype)
    positions = edge_positions(rng, 37, 29, N, 120, REAL_OF[dtype])
    patches = PatchExtractionLayer(N)(obj, positions)
    assert patches.dtype == dtype
    assert patches.shape == (len(positions), N, N, 1)
    assert worst_error(patches, obj, positions, N) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_precision_holds_far_from_the_origin(rng, dtype):
    """Float32 positions near 1000 keep their sub-pixel weights (the float32 trap)."""
    obj = random_object(rng, (1100, 1100), dtype)
    positions = rng.uniform(900, 1090, (64, 2)).astype(REAL_OF[dtype])
    patches = extract_patches(obj, positions, 12)
    assert worst_error(patches, obj, positions, 12) <= TOLERANCE[dtype]


def test_float64_positions_with_complex64_object(rng):
    obj = random_object(rng, (64, 64), np.complex64)
    positions = rng.uniform(-4, 68, (50, 2))  # float64
    patches = extract_patches(obj, positions, 9)
    assert patches.dtype == tf.complex64
    assert worst_error(patches, obj, positions, 9) <= 1e-6


@pytest.mark.parametrize("N", [4, 7])
def test_nearest_matches_oracle(rng, N):
    obj = random_object(rng, (21, 26), np.complex128)
    positions = edge_positions(rng, 21, 26, N, 80, np.float64)
    positions[-4:] = [[3.5, 4.5], [3.49, 4.51], [-0.5, 0.0], [25.5, 20.5]]
    patches = PatchExtractionLayer(N, interpolation="nearest")(obj, positions)
    assert worst_error(patches, obj, positions, N, "nearest") == 0.0


def test_channel_format_matches_flat(rng):
    obj = random_object(rng, (40, 40))
    flat = rng.uniform(-5, 45, (6 * 4, 2)).astype(np.float32)
    channel = flat.reshape(6, 4, 2).transpose(0, 2, 1)[:, None]  # (B, 1, 2, c)
    by_channel = extract_patches(obj, channel, 8).numpy()
    by_flat = extract_patches(obj, flat, 8).numpy()
    assert by_channel.shape == (6, 8, 8, 4)
    np.testing.assert_array_equal(
        by_channel.transpose(0, 3, 1, 2).reshape(24, 8, 8), by_flat[..., 0]
    )


@pytest.mark.parametrize("channel", [False, True])
def test_one_object_per_sample(rng, channel):
    objs = random_object(rng, (3, 20, 24))
    c = 2 if channel else 1
    flat = rng.uniform(-3, 25, (3 * c, 2)).astype(np.float32)
    positions = flat.reshape(3, c, 2).transpose(0, 2, 1)[:, None] if channel else flat
    patches = extract_patches(objs[..., None], positions, 6).numpy()
    patches = patches.transpose(0, 3, 1, 2).reshape(3 * c, 6, 6)
    for p in range(3 * c):
        expected = oracle_patches(objs[p // c], flat[p : p + 1], 6)[0]
        assert np.abs(patches[p] - expected).max() <= 1e-6 * np.abs(objs).max()


def test_shared_object_forms_agree(rng):
    obj = random_object(rng, (30, 30))
    positions = rng.uniform(0, 30, (10, 2)).astype(np.float32)
    np.testing.assert_array_equal(
        extract_patches(obj, positions, 7).numpy(),
        extract_patches(obj[None, :, :, None], positions, 7).numpy(),
    )


def test_far_positions_give_zeros(rng):
    obj = random_object(rng, (50, 50))
    positions = np.array([[1e6, 3.0], [-1e6, 3.0], [3.0, 3e9], [-3e30, 3e30], [-9.0, 25.0]])
    patches = extract_patches(obj, positions.astype(np.float32), 16).numpy()
    assert np.all(patches[:4] == 0)
    assert np.all(patches[4] == 0)  # x = -9: columns -17 .. -2, all beyond the blend zone


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_real_objects_follow_the_dtype_policy(rng, dtype):
    obj = rng.standard_normal((25, 25)).astype(np.float64)
    positions = rng.uniform(0, 25, (9, 2)).astype(np.float32)
    patches = PatchExtractionLayer(5, dtype=dtype)(obj, positions)
    assert patches.dtype == dtype
    tolerance = {"float16": 2e-3, "float32": 1e-6, "float64": 1e-12}[dtype]
    assert worst_error(patches.numpy().astype(np.float64), obj, positions, 5) <= tolerance


def test_mixed_precision_policy_keeps_complex_and_positions(rng):
    keras.config.set_dtype_policy("mixed_float16")
    obj = random_object(rng, (600, 600))
    positions = np.array([[590.37, 511.81]], np.float32)
    layer = PatchExtractionLayer(6)
    patches = layer(obj, positions)
    assert patches.dtype == tf.complex64  # never cast to a real dtype
    assert worst_error(patches, obj, positions, 6) <= 1e-6  # positions not cast to float16
    real = layer(obj.real, positions)
    assert real.dtype == tf.float16


def test_large_eager_request_is_chunked_and_exact(rng):
    """More positions than one chunk: the chunks are stitched in order."""
    obj = random_object(rng, (70, 70))
    N = 32
    count = 2 * _eager.chunk_groups((N, N), 1, 1, tf.complex64) + 77  # two chunks and a tail
    positions = rng.uniform(-10, 80, (count, 2)).astype(np.float32)
    patches = extract_patches(obj, positions, N).numpy()
    assert patches.shape == (count, N, N, 1)
    pick = np.r_[0:3, count // 2 - 5 : count // 2 + 5, count - 80 : count]
    assert worst_error(patches[pick], obj, positions[pick], N) <= 1e-6


def test_new_position_counts_reuse_compiled_kernels(rng):
    """Eager calls bucket the count: a new count reuses an existing XLA program."""
    obj = tf.constant(random_object(rng, (64, 64)))
    layer = PatchExtractionLayer(8)
    layer(obj, rng.uniform(0, 64, (1000, 2)).astype(np.float32))
    traces = _kernel.gather_windows.experimental_get_tracing_count()
    for count in (999, 900, 777, 513):
        layer(obj, rng.uniform(0, 64, (count, 2)).astype(np.float32))
    assert _kernel.gather_windows.experimental_get_tracing_count() == traces


def test_config_round_trip():
    layer = PatchExtractionLayer(24, interpolation="nearest", name="patches")
    config = layer.get_config()
    assert config["N"] == 24 and config["interpolation"] == "nearest"
    clone = PatchExtractionLayer.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, PatchExtractionLayer) and restored.N == 24


def test_output_shape():
    layer = PatchExtractionLayer(16)
    assert layer.compute_output_shape((64, 64), (None, 1, 2, 4)) == (None, 16, 16, 4)
    assert layer.compute_output_shape((1, 64, 64, 1), (100, 2)) == (100, 16, 16, 1)


def _functional_model(N=8):
    obj = keras.Input(shape=(40, 40, 1), batch_size=1, dtype="complex64", name="obj")
    positions = keras.Input(shape=(1, 2, 4), dtype="float32", name="positions")
    patches = PatchExtractionLayer(N, name="extract")(obj, positions)
    return keras.Model([obj, positions], patches)


def test_symbolic_call_with_complex_inputs():
    model = _functional_model()
    assert model.output.shape == (None, 8, 8, 4)
    assert model.output.dtype == "complex64"


def test_keras_save_and_load(rng, tmp_path):
    model = _functional_model()
    obj = random_object(rng, (1, 40, 40, 1))
    positions = rng.uniform(0, 40, (5, 1, 2, 4)).astype(np.float32)
    before = model([obj, positions]).numpy()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("extract"), PatchExtractionLayer)
    after = loaded([obj, positions]).numpy()
    np.testing.assert_array_equal(before, after)
    direct = extract_patches(obj, positions, 8).numpy()
    np.testing.assert_array_equal(after, direct)


class _LearnedObject(keras.layers.Layer):
    """A trainable real object patched at fixed positions (a minimal fit test)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.obj = self.add_weight(shape=(24, 24), initializer="zeros", name="obj")
        self.extract = PatchExtractionLayer(6)

    def call(self, positions):
        return self.extract(self.obj, positions)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_step_updates_an_object_through_the_layer(rng, jit_compile):
    target = rng.standard_normal((24, 24)).astype(np.float32)
    positions = rng.uniform(2, 22, (32, 2)).astype(np.float32)
    patches = oracle_patches(target, positions, 6).real[..., None].astype(np.float32)
    inputs = keras.Input(shape=(2,))
    model = keras.Model(inputs, _LearnedObject()(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse", jit_compile=jit_compile)
    history = model.fit(positions, patches, batch_size=8, epochs=3, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]


def test_gradients_reach_object_and_positions(rng):
    obj = tf.Variable(random_object(rng, (20, 20), np.complex128))
    positions = tf.Variable(rng.uniform(4, 16, (5, 2)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.abs(extract_patches(obj, positions, 6)) ** 2)
    d_obj, d_pos = tape.gradient(loss, [obj, positions])
    assert d_obj.shape == (20, 20) and d_pos.shape == (5, 2)
    # d loss / d x by central differences (positions away from integer crossings).
    step = 1e-6
    shifted = []
    for sign in (1, -1):
        moved = positions.numpy().copy()
        moved[0, 0] += sign * step
        shifted.append(float(tf.reduce_sum(tf.abs(extract_patches(obj, moved, 6)) ** 2)))
    numeric = (shifted[0] - shifted[1]) / (2 * step)
    np.testing.assert_allclose(d_pos.numpy()[0, 0], numeric, rtol=1e-5)


@pytest.mark.parametrize("N", [5, 6])
def test_delta_image_convention(N):
    """A delta at (row 7, col 11) of a 13 x 19 object, hand-computed, odd and even N."""
    obj = np.zeros((13, 19), np.complex64)
    obj[7, 11] = 4 - 2j
    layer = PatchExtractionLayer(N)
    centre = layer(obj, np.array([[11.0, 7.0]], np.float32)).numpy()[0, :, :, 0]
    expected = np.zeros((N, N), np.complex64)
    expected[N // 2, N // 2] = 4 - 2j  # [x, y] order: x = column 11, y = row 7
    np.testing.assert_array_equal(centre, expected)
    # A position one pixel right of the delta sees it one pixel left of the centre.
    moved = layer(obj, np.array([[12.0, 7.0]], np.float32)).numpy()[0, :, :, 0]
    assert moved[N // 2, N // 2 - 1] == 4 - 2j and np.count_nonzero(moved) == 1
    # Half a pixel in x and y splits the delta into four equal quarters.
    half = layer(obj, np.array([[10.5, 6.5]], np.float32)).numpy()[0, :, :, 0]
    quarter = np.complex64(1 - 0.5j)
    np.testing.assert_array_equal(half[N // 2 : N // 2 + 2, N // 2 : N // 2 + 2], quarter)
    assert np.count_nonzero(half) == 4


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_block_gather_kernel_equals_per_sample_kernel(rng, interpolation):
    """`run_functions_eagerly` switches to the per-sample kernel; both give the same patches."""
    obj = random_object(rng, (31, 27), np.complex128)
    positions = edge_positions(rng, 31, 27, 9, 60, np.float64)
    fast = extract_patches(obj, positions, 9, interpolation).numpy()
    tf.config.run_functions_eagerly(True)
    try:
        slow = extract_patches(obj, positions, 9, interpolation).numpy()
    finally:
        tf.config.run_functions_eagerly(False)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-14)


def test_chunked_output_is_a_usable_tensor(rng):
    """The stitched output feeds ordinary TensorFlow ops (64-byte aligned buffer)."""
    obj = random_object(rng, (70, 70))
    positions = rng.uniform(0, 70, (_eager.chunk_groups((32, 32), 1, 1, tf.complex64) + 5, 2))
    patches = extract_patches(obj, positions, 32)
    total = tf.reduce_sum(tf.abs(patches) ** 2) + tf.reduce_sum(tf.math.real(patches * 2))
    expected = np.sum(np.abs(patches.numpy()) ** 2) + 2 * np.sum(patches.numpy().real)
    np.testing.assert_allclose(float(total), expected, rtol=1e-4)


@pytest.mark.parametrize("per_sample", [False, True])
def test_unknown_batch_inside_a_graph(rng, per_sample):
    objs = random_object(rng, (3, 20, 30, 1))
    obj_spec = tf.TensorSpec([None, 20, 30, 1] if per_sample else [1, 20, 30, 1], tf.complex64)
    positions = rng.uniform(0, 30, (3, 1, 2, 2)).astype(np.float32)
    layer = PatchExtractionLayer(7)
    run = tf.function(layer, input_signature=[obj_spec, tf.TensorSpec([None, 1, 2, 2])])
    obj = objs if per_sample else objs[:1]
    np.testing.assert_array_equal(run(obj, positions).numpy(), layer(obj, positions).numpy())


def test_graph_batch_mismatch_is_caught_at_run_time(rng):
    objs = random_object(rng, (2, 10, 10, 1))
    spec = [tf.TensorSpec([None, 10, 10, 1], tf.complex64), tf.TensorSpec([None, 2])]
    run = tf.function(PatchExtractionLayer(4), input_signature=spec)
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        run(objs, np.zeros((3, 2), np.float32))
    # A single object with an unknown batch dimension is shared by every position.
    shared = run(objs[:1], np.full((3, 2), 5.0, np.float32)).numpy()
    np.testing.assert_array_equal(shared, extract_patches(objs[:1], np.full((3, 2), 5.0), 4))


def test_predict_with_per_sample_complex_objects(rng):
    obj = keras.Input(shape=(12, 12, 1), dtype="complex64")
    positions = keras.Input(shape=(1, 2, 1))
    model = keras.Model([obj, positions], PatchExtractionLayer(5)(obj, positions))
    objs = random_object(rng, (40, 12, 12, 1))
    pos = rng.uniform(0, 12, (40, 1, 2, 1)).astype(np.float32)
    predicted = model.predict([objs, pos], batch_size=16, verbose=0)
    np.testing.assert_array_equal(predicted, extract_patches(objs, pos, 5).numpy())


def test_new_counts_reuse_programs_beyond_one_chunk_and_in_gradients(rng):
    """Beyond one chunk, counts run in programs of a power of two of chunks: counts that
    need the same powers reuse them, and a new power compiles one program."""
    obj = tf.constant(random_object(rng, (40, 40)))
    layer = PatchExtractionLayer(32)
    chunk = _eager.chunk_groups((32, 32), 1, 1, tf.complex64)

    def traces_after(*counts):
        for count in counts:
            patches = layer(obj, rng.uniform(0, 40, (count, 2)).astype(np.float32))
            assert patches.shape == (count, 32, 32, 1)
        return _kernel.gather_windows.experimental_get_tracing_count()

    forward = traces_after(chunk, chunk + chunk // 2)  # one chunk, two chunks
    assert traces_after(chunk + 1, 2 * chunk - 1, 3 * chunk) == forward  # 2, 2, 2 + 1
    assert traces_after(3 * chunk + 5) == forward + 1  # four chunks: one new program
    assert traces_after(4 * chunk - 3, 7 * chunk) == forward + 1  # 4, and 4 + 2 + 1
    assert _eager.pieces(3) == [2, 1] and _eager.pieces(21) == [4, 4, 4, 4, 4, 1]
    assert _eager.pieces(21, most=8) == [8, 8, 4, 1] and _eager.pieces(3, most=0) == [1, 1, 1]
    assert _eager.pieces(64) == [64] and _eager.pieces(3, whole=False) == [1, 1, 1]

    def gradient(count):
        positions = tf.Variable(rng.uniform(0, 40, (count, 2)).astype(np.float32))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.abs(layer(obj, positions)))
        return tape.gradient(loss, positions)

    assert gradient(10).shape == (10, 2)
    backward = _kernel.gather_windows_vjp.experimental_get_tracing_count()
    for count in (11, 13, 16):
        assert gradient(count).shape == (count, 2)
    assert _kernel.gather_windows_vjp.experimental_get_tracing_count() == backward


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_analytic_adjoint_matches_autodiff_of_the_per_sample_kernel(rng, per_sample, interpolation):
    """The block-scatter adjoint equals TensorFlow's gradient of the per-sample formulation."""
    count = 3 if per_sample else 1
    obj = tf.constant(random_object(rng, (count, 23, 17, 1), np.complex128))
    positions = edge_positions(rng, 23, 17, 7, 3 * 10 - 9, np.float64).reshape(3, 10, 2)
    positions = tf.constant(positions)
    index = tf.range(3) if per_sample else None
    d_out = tf.constant(random_object(rng, (3, 7, 7, 10, 1), np.complex128))
    static = {"size": (7, 7), "shift": (-3, -3), "interpolation": interpolation}
    static["complex_out"] = True
    margin = _kernel.footprint((7, 7), interpolation)
    table = _kernel.prepare_table(obj, margin)
    d_obj, d_pos = _kernel.gather_windows_vjp(
        table, positions, index, d_out, **static, margin=margin
    )
    ref_obj, ref_pos = _windows.windows_vjp(obj, positions, index, d_out, **static)
    np.testing.assert_allclose(d_obj.numpy(), ref_obj.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(d_pos.numpy(), ref_pos.numpy(), rtol=0, atol=1e-11)


def test_adjoint_identity_in_complex128(rng):
    """<A x, y> = <x, A^H y>, edges included, with A^H from the layer's gradient."""
    x = tf.constant(random_object(rng, (19, 26), np.complex128))
    y = tf.constant(random_object(rng, (40, 9, 9, 1), np.complex128))
    positions = edge_positions(rng, 19, 26, 9, 31, np.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        ax = extract_patches(x, positions, 9)
        # For a real-weighted linear map TensorFlow's gradient of Re<A x, y> is A^H y.
        real_inner = tf.math.real(tf.reduce_sum(ax * tf.math.conj(y)))
    ahy = tape.gradient(real_inner, x)
    lhs = np.vdot(y.numpy(), ax.numpy())
    rhs = np.vdot(ahy.numpy(), x.numpy())
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_unknown_object_batch_with_a_known_position_count(rng):
    """Was: a TypeError in the memory check, multiplying by the unknown batch size."""
    obj = random_object(rng, (1, 16, 16, 1))
    positions = rng.uniform(0, 16, (3, 2)).astype(np.float32)
    run = tf.function(
        lambda o, p: extract_patches(o, p, 4),
        input_signature=[
            tf.TensorSpec([None, 16, 16, 1], tf.complex64),
            tf.TensorSpec([3, 2], tf.float32),
        ],
    )
    np.testing.assert_array_equal(run(obj, positions).numpy(), extract_patches(obj, positions, 4))


def test_dlpack_view_without_native_protocol_shares_the_buffer():
    """TensorFlow before 2.20 has no `EagerTensor.__dlpack__`: the capsule path is used."""
    tensor = tf.complex(tf.random.normal([3, 5, 7]), tf.random.normal([3, 5, 7]))
    view = np.from_dlpack(_eager.Capsule(tensor))
    np.testing.assert_array_equal(view, tensor.numpy())
    assert view.dtype == np.complex64 and view.shape == (3, 5, 7)
    assert np.from_dlpack(_eager.dlpack_view(tensor)).shape == (3, 5, 7)
    # No copy: every view reads the tensor's own buffer.
    again = np.from_dlpack(_eager.Capsule(tensor))
    assert view.__array_interface__["data"][0] == again.__array_interface__["data"][0]


@pytest.mark.parametrize(
    ("kind", "dtype"),
    [
        ("shared", np.complex64),
        ("per-sample", np.complex128),
        ("shared", np.float16),
        ("c=0", np.complex64),
    ],
)
def test_requests_in_several_pieces_are_exact(rng, monkeypatch, kind, dtype):
    """A count that is not a power of two of chunks runs in pieces copied into one tensor:
    per-sample objects, other dtypes and groups without patches alike (small chunks here)."""
    monkeypatch.setattr(_eager, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(_eager, "PIECE_BYTES", 2 * 4096)
    N = 8
    step = _eager.chunk_groups((N, N), 1, 1, tf.as_dtype(dtype))
    count = 5 * step + 3  # six chunks: pieces of 2, 2, 2
    real = np.float64 if dtype == np.complex128 else np.float32
    if kind == "per-sample":
        obj = random_object(rng, (count, 20, 20, 1), dtype)
        positions = rng.uniform(-4, 24, (count, 2)).astype(real)
    elif kind == "c=0":
        obj = random_object(rng, (20, 20), dtype)
        positions = np.zeros((count, 1, 2, 0), real)
    else:
        obj = random_object(rng, (20, 20), np.complex64).real.astype(dtype)
        positions = rng.uniform(-4, 24, (count, 2)).astype(real)
    patches = extract_patches(obj, positions, N).numpy()
    expected = tf.function(lambda o, p: extract_patches(o, p, N))(obj, positions).numpy()
    assert patches.dtype == expected.dtype and patches.shape == expected.shape
    np.testing.assert_array_equal(patches, expected)


def test_functions_run_eagerly_is_honoured_beyond_one_chunk(rng, monkeypatch):
    """With `tf.config.run_functions_eagerly(True)` nothing is compiled, however many chunks."""
    monkeypatch.setattr(_eager, "CHUNK_BYTES", 4096)
    obj = random_object(rng, (20, 20))
    positions = rng.uniform(0, 20, (3 * _eager.chunk_groups((8, 8), 1, 1, tf.complex64), 2))
    expected = extract_patches(obj, positions, 8).numpy()
    tf.config.run_functions_eagerly(True)
    try:
        kernels = (_kernel.gather_windows, _windows._sample_windows_xla)
        before = [kernel.experimental_get_tracing_count() for kernel in kernels]
        patches = extract_patches(obj, positions, 8).numpy()
        assert [kernel.experimental_get_tracing_count() for kernel in kernels] == before
    finally:
        tf.config.run_functions_eagerly(False)
    np.testing.assert_allclose(patches, expected, rtol=0, atol=1e-6 * np.abs(obj).max())
