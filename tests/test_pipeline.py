"""patch_dataset: lazy, parallel, deterministic tf.data pipelines of patches."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import random_object

from ptycho import extract_patches, patch_dataset


def collect(dataset):
    return [tf.nest.map_structure(lambda t: t.numpy(), item) for item in dataset]


@pytest.mark.parametrize("channel", [False, True])
def test_batches_equal_direct_extraction(rng, channel):
    obj = random_object(rng, (50, 60))
    shape = (37, 1, 2, 4) if channel else (150, 2)
    positions = rng.uniform(-3, 60, shape).astype(np.float32)
    batches = collect(patch_dataset(obj, positions, 8, batch_size=16))
    assert [len(b) for b in batches] == [16] * (shape[0] // 16) + [shape[0] % 16]
    np.testing.assert_array_equal(
        np.concatenate(batches), extract_patches(obj, positions, 8).numpy()
    )


def test_targets_and_per_sample_objects_are_batched_alongside(rng):
    objs = random_object(rng, (30, 20, 20, 1))
    positions = rng.uniform(0, 20, (30, 2)).astype(np.float32)
    targets = {"index": np.arange(30), "amplitude": rng.random((30, 4))}
    batches = collect(patch_dataset(objs, positions, 5, 8, targets=targets, shuffle=True, seed=3))
    index = np.concatenate([t["index"] for _, t in batches])
    assert sorted(index) == list(range(30)) and list(index) != list(range(30))
    patches = np.concatenate([p for p, _ in batches])
    expected = extract_patches(objs, positions, 5).numpy()[index]
    np.testing.assert_array_equal(patches, expected)
    amplitude = np.concatenate([t["amplitude"] for _, t in batches])
    np.testing.assert_array_equal(amplitude, targets["amplitude"][index])


def test_a_seed_makes_every_epoch_reproducible(rng):
    obj = random_object(rng, (30, 30))
    positions = rng.uniform(0, 30, (40, 2)).astype(np.float32)
    ids = np.arange(40)

    def epochs(seed):
        dataset = patch_dataset(obj, positions, 4, 7, targets=ids, shuffle=True, seed=seed)
        return [np.concatenate([t for _, t in collect(dataset)]) for _ in range(3)]

    first, again = epochs(11), epochs(11)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # reshuffled between epochs


def test_output_larger_than_memory_is_produced_lazily(rng):
    """A million 64 x 64 complex64 patches (32 GB) are never built: two batches are."""
    obj = random_object(rng, (512, 512))
    positions = rng.uniform(0, 512, (1_000_000, 2)).astype(np.float32)
    dataset = patch_dataset(obj, positions, 64, batch_size=256)
    assert dataset.cardinality().numpy() == -(-1_000_000 // 256)
    first, second = collect(dataset.take(2))
    np.testing.assert_array_equal(second, extract_patches(obj, positions[256:512], 64).numpy())
    assert first.shape == (256, 64, 64, 1)


def test_feeds_model_fit(rng):
    """Patches in, a per-patch label out: model.fit trains straight from the pipeline."""
    obj = rng.standard_normal((40, 40)).astype(np.float32)
    positions = rng.uniform(0, 40, (256, 2)).astype(np.float32)
    labels = extract_patches(obj, positions, 6).numpy().mean(axis=(1, 2))  # (256, 1)
    dataset = patch_dataset(obj, positions, 6, 32, targets=labels, shuffle=True, seed=0)
    model = keras.Sequential(
        [keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.Adam(0.05), "mse")
    history = model.fit(dataset, epochs=8, verbose=0, shuffle=False)  # the dataset shuffles
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"N": 0}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"targets": np.zeros(3)}, ValueError),
        ({"interpolation": "cubic"}, ValueError),
    ],
)
def test_bad_arguments_are_refused(rng, kwargs, error):
    args = {"obj": np.ones((8, 8)), "positions": np.zeros((5, 2)), "N": 2, "batch_size": 2}
    with pytest.raises(error):
        patch_dataset(**{**args, **kwargs})
