"""The layers inside Keras models: functional, sequential, subclassed, saved, fitted."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import random_object, run_layer_test

from ptycho import extract_patches
from ptycho.layers import LearnableObject, PatchExtractionLayer


@keras.saving.register_keras_serializable(package="ptycho_tests")
class ProbedPatches(keras.Model):
    """A subclassed model: patches of a fixed object times a probe."""

    def __init__(self, N=8, **kwargs):
        super().__init__(**kwargs)
        self.N = N
        self.extract = PatchExtractionLayer(N)

    def call(self, inputs):
        obj, positions = inputs
        return self.extract(obj, positions) * tf.complex(2.0, 0.0)

    def get_config(self):
        return {**super().get_config(), "N": self.N}

    def build_from_config(self, config):
        self.built = True  # no weights of its own


def _round_trip(model, tmp_path, inputs):
    before = model(inputs)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = loaded(inputs)
    np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    return loaded


def test_subclassed_model_saves_and_loads(rng, tmp_path):
    obj = tf.constant(random_object(rng, (1, 30, 30, 1)))
    positions = tf.constant(rng.uniform(0, 30, (7, 2)).astype(np.float32))
    model = ProbedPatches(6)
    loaded = _round_trip(model, tmp_path, (obj, positions))
    assert isinstance(loaded.extract, PatchExtractionLayer)
    expected = 2 * extract_patches(obj, positions, 6).numpy()
    np.testing.assert_array_equal(loaded((obj, positions)).numpy(), expected)


def test_sequential_model_with_a_learnable_object(rng, tmp_path):
    initial = random_object(rng, (32, 32))
    model = keras.Sequential(
        [keras.Input((2,)), LearnableObject((32, 32), 8, initial=initial, name="object")]
    )
    positions = rng.uniform(0, 32, (9, 2)).astype(np.float32)
    out = model(positions)
    assert out.shape == (9, 8, 8, 1) and out.dtype == tf.complex64
    np.testing.assert_array_equal(out.numpy(), extract_patches(initial, positions, 8).numpy())
    loaded = _round_trip(model, tmp_path, positions)
    np.testing.assert_array_equal(loaded.get_layer("object").value.numpy(), initial)


def test_patch_extraction_layer_passes_the_layer_test(rng, tmp_path):
    objs = random_object(rng, (4, 16, 16, 1))  # one object per group, so `fit` can batch
    positions = rng.uniform(-2, 18, (4, 1, 2, 3)).astype(np.float32)
    *_, output = run_layer_test(
        PatchExtractionLayer,
        {"N": 6, "interpolation": "bilinear", "name": "extract"},
        [objs, positions],
        tmp_path,
        expected_output_shape=(4, 6, 6, 3),
        expected_output_dtype="complex64",
        expect_trained_weights=False,
    )
    np.testing.assert_array_equal(output, extract_patches(objs, positions, 6).numpy())


def test_learnable_object_with_channel_positions_passes_the_layer_test(rng, tmp_path):
    positions = rng.uniform(1, 18, (3, 1, 2, 4)).astype(np.float32)
    _, loaded, output = run_layer_test(
        LearnableObject,
        {"object_shape": (20, 24), "N": 5, "name": "object"},
        [positions],
        tmp_path,
        expected_output_shape=(3, 5, 5, 4),
        expected_output_dtype="complex64",
    )
    np.testing.assert_allclose(np.abs(output[:, 2, 2, :]), 1, atol=1e-6)  # initial ones
    assert isinstance(loaded.get_layer("object"), LearnableObject)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_recovers_an_object_with_a_learnable_object(rng, jit_compile):
    """model.fit, jitted or not: the learnable object moves toward the true one."""
    truth = random_object(rng, (24, 24))
    positions = rng.uniform(3, 21, (64, 2)).astype(np.float32)
    target = extract_patches(truth, positions, 6).numpy()
    pairs = np.concatenate([target.real, target.imag], axis=-1)

    layer = LearnableObject((24, 24), 6, initial=np.zeros((24, 24)))
    inputs = keras.Input((2,))
    patches = layer(inputs)
    split = keras.layers.Lambda(
        lambda z: tf.concat([tf.math.real(z), tf.math.imag(z)], -1), output_shape=(6, 6, 2)
    )(patches)
    model = keras.Model(inputs, split)
    model.compile(keras.optimizers.Adam(0.05), "mse", jit_compile=jit_compile)
    before = np.abs(layer.value.numpy() - truth)[6:18, 6:18].mean()
    history = model.fit(positions, pairs, batch_size=16, epochs=20, verbose=0, shuffle=False)
    after = np.abs(layer.value.numpy() - truth)[6:18, 6:18].mean()
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]
    assert after < 0.3 * before


def test_learnable_object_precision_and_policy(rng):
    keras.config.set_dtype_policy("mixed_float16")
    layer = LearnableObject((16, 16), 4)
    assert layer.real.dtype == "float32"
    assert layer(np.array([[8.0, 8.0]], np.float32)).dtype == tf.complex64
    wide = LearnableObject((16, 16), 4, dtype="float64")
    assert wide(np.array([[8.0, 8.0]])).dtype == tf.complex128


def test_learnable_object_with_flat_positions_passes_the_layer_test(rng, tmp_path):
    initial = random_object(rng, (10, 12))
    positions = rng.uniform(-1, 12, (7, 2)).astype(np.float32)
    layer, _, output = run_layer_test(
        LearnableObject,
        {"object_shape": (10, 12), "N": 4, "interpolation": "nearest", "initial": initial},
        [positions],
        tmp_path,
        expected_output_shape=(7, 4, 4, 1),
        expected_output_dtype="complex64",
    )
    np.testing.assert_array_equal(output, extract_patches(initial, positions, 4, "nearest"))
    clone = LearnableObject.from_config(layer.get_config())
    assert clone.object_shape == (10, 12) and clone.N == 4
    assert clone.extract.interpolation == "nearest"


def test_learnable_object_refuses_a_wrong_initial_shape():
    with pytest.raises(ValueError, match="initial"):
        LearnableObject((10, 12), 4, initial=np.ones((12, 10)))


def test_list_call_form_equals_the_two_argument_form(rng):
    obj = random_object(rng, (40, 40))
    positions = rng.uniform(0, 40, (6, 1, 2, 4)).astype(np.float32)
    layer = PatchExtractionLayer(8)
    expected = layer(obj, positions).numpy()
    np.testing.assert_array_equal(layer([obj, positions]).numpy(), expected)
    np.testing.assert_array_equal(layer((obj, positions)).numpy(), expected)
    assert layer.compute_output_shape([(1, 40, 40, 1), (6, 1, 2, 4)]) == (6, 8, 8, 4)
    assert layer.compute_output_shape(((40, 40), (5, 2))) == (5, 8, 8, 1)
    assert layer.compute_output_shape((40, 40), (5, 2)) == (5, 8, 8, 1)
    # Keras's own multi-input idiom: a list of symbolic inputs.
    inputs = [keras.Input((40, 40, 1), batch_size=1, dtype="complex64"), keras.Input((1, 2, 4))]
    model = keras.Model(inputs, layer(inputs))
    assert model.output.shape == (None, 8, 8, 4)
    np.testing.assert_array_equal(model([obj[None, :, :, None], positions]).numpy(), expected)


def test_a_call_without_positions_names_both_forms(rng):
    with pytest.raises(
        TypeError, match=r"layer\(obj, positions\)` or `layer\(\[obj, positions\]\)"
    ):
        PatchExtractionLayer(8)(random_object(rng, (16, 16)))
    with pytest.raises(TypeError, match="length 3"):
        PatchExtractionLayer(8)([1, 2, 3])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_and_predict_with_one_shared_object(rng, jit_compile):
    """The shared object lives in the model, so `fit` and `predict` see positions alone."""
    obj = random_object(rng, (48, 48))
    positions = rng.uniform(8, 40, (96, 1, 2, 4)).astype(np.float32)
    targets = np.abs(extract_patches(obj, positions, 8).numpy())
    inputs = keras.Input((1, 2, 4))
    held = LearnableObject(obj.shape, N=8, initial=obj, trainable=False)
    amplitude = keras.layers.Lambda(tf.abs, output_shape=(8, 8, 4))(held(inputs))
    outputs = keras.layers.Conv2D(4, 1, kernel_initializer="zeros")(amplitude)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.05), "mse", jit_compile=jit_compile)
    history = model.fit(positions, targets, batch_size=16, epochs=4, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.3 * losses[0]
    predicted = model.predict(positions, batch_size=32, verbose=0)
    assert predicted.shape == (96, 8, 8, 4)
    np.testing.assert_allclose(predicted, model(positions).numpy(), rtol=1e-5, atol=1e-6)
    # The held object is not trained.
    np.testing.assert_array_equal(held.value.numpy(), obj)
    # The same model with a dataset of positions from `patch_dataset`-style pipelines.
    dataset = tf.data.Dataset.from_tensor_slices((positions, targets)).batch(32)
    assert np.isfinite(model.evaluate(dataset, verbose=0))


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
@pytest.mark.parametrize("layer_kwargs", [{}, {"autocast": True}])
def test_keras_casts_no_input_of_the_layers(rng, monkeypatch, policy, layer_kwargs):
    """Under a float32 or mixed policy, float64 positions and a complex128 object reach
    `call` as they are (the layers rely on `autocast=False`, public Keras API): positions
    cast to float32 would lose sub-pixel precision."""
    seen = []
    call = PatchExtractionLayer.call

    def recording_call(self, obj, positions=None):
        seen.append((obj.dtype, positions.dtype))
        return call(self, obj, positions)

    monkeypatch.setattr(PatchExtractionLayer, "call", recording_call)
    keras.config.set_dtype_policy(policy)
    obj = random_object(rng, (24, 24)).astype(np.complex128)
    positions = np.array([[12.0 + 2.0**-30, 11.5], [3.25, 20.0]])  # not float32 numbers
    layer = PatchExtractionLayer(6, **layer_kwargs)
    for convert in (np.asarray, tf.constant):
        out = layer(convert(obj), convert(positions))
        assert seen.pop() == (tf.complex128, tf.float64)
        np.testing.assert_array_equal(out.numpy(), extract_patches(obj, positions, 6).numpy())
    inputs = keras.Input((2,), dtype="float64")
    model = keras.Model(inputs, LearnableObject((24, 24), 6, initial=obj.real)(inputs))
    model(positions)
    assert seen.pop() == (tf.complex64, tf.float64)
