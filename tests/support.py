"""Test helpers: the float64 oracles of the contract, input generators, the execution modes
and a Keras layer check."""

import numpy as np

from ptycho.reference import oracle_patches

__all__ = [
    "MODES",
    "Mode",
    "edge_positions",
    "numpy_overlap_add",
    "oracle_patches",
    "positions_away_from_integers",
    "random_object",
    "run_layer_test",
    "smooth_object",
]

MODES = ("eager", "tf.function", "jit")


class Mode:
    """One way of running a TensorFlow callable: `"eager"`, `"tf.function"` (a graph) or
    `"jit"` (`tf.function(jit_compile=True)`, one XLA program).

    `mode(fn)` is `fn` run that way. The `mode` fixture of `conftest.py` gives every mode in
    turn; `@pytest.mark.parametrize("mode", [...], indirect=True)` picks some.
    """

    def __init__(self, name: str):
        if name not in MODES:
            raise ValueError(f"`name` must be one of {MODES}. Received: name={name!r}")
        self.name = name

    def __call__(self, fn):
        if self.name == "eager":
            return fn
        import tensorflow as tf

        return tf.function(fn, jit_compile=self.name == "jit", autograph=False)

    def __repr__(self) -> str:
        return f"Mode({self.name!r})"

    def agrees_with_eager(self, fn, *args, rtol=0.0, atol=0.0):
        """`fn(*args)` in this mode as NumPy (a nest of arrays), checked against the eager
        call: bit for bit by default. In eager mode there is nothing to compare with."""
        import tensorflow as tf

        got = tf.nest.map_structure(np.asarray, self(fn)(*args))
        if self.name != "eager":
            eager = tf.nest.map_structure(np.asarray, fn(*args))
            for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(eager), strict=True):
                assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.shape)
                np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=self.name)
        return got


def random_object(rng, shape, dtype=np.complex64):
    obj = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return obj.astype(dtype)


def edge_positions(rng, height, width, N, count, dtype=np.float32):
    """Positions inside, on and beyond every edge, plus a few fixed hard cases."""
    reach = N // 2 + 2
    pos = np.stack(
        [
            rng.uniform(-reach, width - 1 + reach, count),
            rng.uniform(-reach, height - 1 + reach, count),
        ],
        axis=1,
    )
    fixed = [
        [0.0, 0.0],
        [width - 1, height - 1],
        [-0.5, height / 2],
        [width - 0.5, height / 2 + 0.25],
        [width / 3, -0.75],
        [width / 3, height - 0.25],
        [-N, -N],
        [1e7, -1e7],
        [width / 2 + 0.5, height / 2 + 0.5],
    ]
    return np.concatenate([np.array(fixed), pos]).astype(dtype)


def smooth_object(shape, count=1):
    """A smooth complex object (low spatial frequencies only), `(count, H, W, 1)`."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    layers = []
    for k in range(count):
        phase = 2 * np.pi * (0.031 * yy + 0.047 * xx) + k
        amplitude = 1 + 0.3 * np.cos(2 * np.pi * (0.023 * xx - 0.019 * yy) + k)
        layers.append(amplitude * np.exp(1j * phase))
    return np.stack(layers)[..., None]


def positions_away_from_integers(rng, count, low, high):
    """`(count, 2)` positions whose fractional parts lie in [0.2, 0.8]."""
    whole = rng.integers(low, high, (count, 2))
    return whole + rng.uniform(0.2, 0.8, (count, 2))


def numpy_overlap_add(patches, positions, shape, interpolation="bilinear"):
    """Independent reference for unnormalised reassembly of `(P, N, N, 1)` patches at `(P, 2)`
    positions: spread every patch pixel onto its (up to) four neighbours, in float64."""
    patches = np.asarray(patches)[..., 0]
    positions = np.asarray(positions, np.float64)
    count, N = patches.shape[0], patches.shape[1]
    canvas = np.zeros(shape, np.result_type(patches.dtype, np.float64))
    grid = np.arange(N) - N // 2
    for k in range(count):
        ys = positions[k, 1] + grid[:, None] + 0 * grid[None, :]
        xs = positions[k, 0] + grid[None, :] + 0 * grid[:, None]
        y0, x0 = np.floor(ys), np.floor(xs)
        fy, fx = ys - y0, xs - x0
        if interpolation == "nearest":
            corners = [(y0 + (fy >= 0.5), x0 + (fx >= 0.5), np.ones_like(fy))]
        else:
            corners = [
                (y0, x0, (1 - fy) * (1 - fx)),
                (y0, x0 + 1, (1 - fy) * fx),
                (y0 + 1, x0, fy * (1 - fx)),
                (y0 + 1, x0 + 1, fy * fx),
            ]
        for rows, cols, weight in corners:
            inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
            r, c = rows[inside].astype(int), cols[inside].astype(int)
            np.add.at(canvas, (r, c), weight[inside] * patches[k][inside])
    return canvas


def run_layer_test(
    layer_cls,
    init_kwargs,
    inputs,
    tmp_path,
    *,
    expected_output_shape=None,
    expected_output_dtype=None,
    expect_trained_weights=True,
):
    """The checks every layer passes, in the spirit of Keras's `run_layer_test`.

    `inputs` are the layer's call arguments, NumPy arrays with the batch first, called as
    `layer(*inputs)`. The checks: a `get_config` / `from_config` round trip (and Keras
    serialization) that rebuilds the same layer; a call on symbolic `keras.Input`s of the
    same shapes (batch unknown) building a `keras.Model` with the expected output shape
    and dtype, whose outputs equal the eager call; a `.keras` save and load under
    `tmp_path` giving the same outputs; and one `fit` step, plain and XLA-compiled, of the
    model with a trainable real head on the patch amplitudes, which changes the layer's own
    trainable weights (`expect_trained_weights`) or else the head's.

    Returns `(layer, loaded, output)`: the layer (trained by the fit step), the loaded
    model and the eager output before training, for the caller's own assertions.
    """
    import keras
    import tensorflow as tf

    layer = layer_cls(**init_kwargs)
    output = layer(*inputs).numpy()
    if expected_output_dtype is not None:
        assert output.dtype == np.dtype(expected_output_dtype), output.dtype

    # Config round trip.
    config = layer.get_config()
    for key, value in init_kwargs.items():
        if key in config and key != "dtype":  # the config holds the dtype policy
            assert _plain(config[key]) == _plain(value), (key, config[key], value)
    clone = layer_cls.from_config(config)
    assert type(clone) is layer_cls and clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is layer_cls and restored.get_config() == config
    clone(*inputs)  # built, so that the weights can be copied
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(*inputs).numpy(), output)

    # A symbolic call building a functional model.
    symbolic = [
        keras.Input(batch_shape=(None, *np.shape(a)[1:]), dtype=np.asarray(a).dtype.name)
        for a in inputs
    ]
    patches = layer(*symbolic)
    if expected_output_shape is not None:
        assert tuple(patches.shape) == (None, *expected_output_shape[1:]), patches.shape
    assert keras.backend.standardize_dtype(patches.dtype) == output.dtype.name, patches.dtype
    model = keras.Model(symbolic, patches)
    np.testing.assert_array_equal(model(list(inputs)).numpy(), output)

    # `.keras` save and load.
    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[-1]) is layer_cls
    np.testing.assert_array_equal(loaded(list(inputs)).numpy(), output)

    # One fit step, eager graph and XLA: the weights move.
    amplitude = keras.layers.Lambda(tf.abs, output_shape=tuple(patches.shape[1:]))(patches)
    head = keras.layers.Dense(1, kernel_initializer="ones", name="head")
    trainer = keras.Model(symbolic, head(amplitude))
    watched = layer if expect_trained_weights else head
    assert watched.trainable_weights, f"{watched.name} has no trainable weights"
    targets = np.zeros((len(inputs[0]), *output.shape[1:-1], 1), np.float32)
    for jit_compile in (False, True):
        trainer.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
        before = [w.numpy().copy() for w in watched.trainable_weights]
        history = trainer.fit(list(inputs), targets, batch_size=len(targets), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all(), history.history
        after = [w.numpy() for w in watched.trainable_weights]
        assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)), (
            f"one fit step (jit_compile={jit_compile}) left {watched.name}'s weights unchanged"
        )
    return layer, loaded, output


def _plain(value):
    return tuple(value) if isinstance(value, list | tuple) else value
