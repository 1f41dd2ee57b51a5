"""`patch_dataset`: patches extracted lazily and in parallel by a `tf.data` pipeline."""

from __future__ import annotations

import numbers

import tensorflow as tf

from ptycho import _validation, ops

__all__ = ["patch_dataset"]


def patch_dataset(
    obj,
    positions,
    N: int,
    batch_size: int,
    *,
    targets=None,
    interpolation: str = "bilinear",
    shuffle: bool = False,
    seed: int | None = None,
    drop_remainder: bool = False,
    num_parallel_calls: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of patch batches, extracted on the fly.

    Only positions (and targets) are held; each batch of patches is extracted when the
    pipeline asks for it, on `num_parallel_calls` threads, and the next batches are
    prefetched while the consumer works. The patches of a scan therefore never need to
    fit in memory at once, and the dataset feeds `model.fit` directly.

    Args:
        obj: the object, `(H, W)` or `(1, H, W, 1)`, shared by every position; or
            `(P, H, W, 1)`, one object per position (or per group), batched with them.
        positions: `(P, 2)` flat or `(B, 1, 2, c)` channel positions, as for
            :func:`ptycho.extract_patches`.
        N: patch size.
        batch_size: positions (or groups) per batch.
        targets: optional array (or nested structure of arrays) with the same first
            dimension as `positions`; the dataset then yields `(patches, targets)`.
        interpolation: `"bilinear"`, `"nearest"` or `"fourier"`.
        shuffle: shuffle the positions every epoch, each epoch in a new order. Only a
            permutation of the indices is held (4 bytes a position, 8 beyond 2**31
            positions), and each batch gathers its positions, targets and objects by index.
        seed: shuffling seed. With a seed, the order of every epoch is reproducible.
        drop_remainder: drop the last, smaller batch; at least one batch must remain.
        num_parallel_calls: batches extracted in parallel, a positive int or
            `tf.data.AUTOTUNE`.

    Returns:
        A dataset of `(batch, N, N, c)` (or `(batch, N, N, 1)`) patches, or of
        `(patches, targets)` pairs, in the object's dtype. Batches come in a fixed order
        for a given seed, whatever the parallelism.
    """
    N = _validation.check_size(N)
    batch_size = _validation.check_size(batch_size, "batch_size")
    interpolation = _validation.check_interpolation(interpolation)
    num_parallel_calls = _check_parallel_calls(num_parallel_calls)
    obj = _validation.as_object(obj)
    positions = _validation.to_tensor(positions, "positions")
    _validation.as_positions(positions, obj.dtype)  # validate shape, dtype and values early
    count = positions.shape[0]
    if count == 0:
        raise ValueError(
            f"`positions` must not be empty. Received: positions.shape={positions.shape}"
        )
    per_sample = obj.shape[0] != 1
    if per_sample and obj.shape[0] != count:
        raise ValueError(
            "With one object per sample, `obj` and `positions` must have the same batch size. "
            f"Received: obj.shape={obj.shape} and positions.shape={positions.shape}"
        )
    items = {"positions": positions}
    if per_sample:
        items["obj"] = obj
    if targets is not None:
        items["targets"] = tf.nest.map_structure(
            lambda t: _validation.to_tensor(t, "targets"), targets
        )
        for leaf in tf.nest.flatten(items["targets"]):
            if leaf.shape.rank == 0 or leaf.shape[0] != count:
                raise ValueError(
                    "`targets` must have the same first dimension as `positions`. "
                    f"Received: {leaf.shape} and positions.shape={positions.shape}"
                )

    batches = count // batch_size if drop_remainder else -(-count // batch_size)
    if batches == 0:
        raise ValueError(
            "With `drop_remainder`, `batch_size` must not exceed the number of positions. "
            f"Received: batch_size={batch_size} and positions.shape={positions.shape}"
        )
    if shuffle:
        # One permutation of the indices per epoch (4 or 8 bytes a position), drawn from a
        # key that changes every iteration; batches gather their positions by index.
        # `Dataset.shuffle` would instead hold every element in its buffer.
        index_dtype = tf.int32 if count < 2**31 else tf.int64

        def epoch(key):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(count, dtype=index_dtype), tf.stack([key, tf.constant(0, tf.int64)])
            )
            return tf.data.Dataset.range(batches).map(
                lambda b: order[b * batch_size : (b + 1) * batch_size]
            )

        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        dataset = keys.flat_map(epoch)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))

        def select(index):
            return tf.nest.map_structure(lambda t: tf.gather(t, index), items)
    else:
        dataset = tf.data.Dataset.range(batches)

        def select(b):
            return tf.nest.map_structure(lambda t: t[b * batch_size : (b + 1) * batch_size], items)

    def extract(index):
        batch = select(index)
        if drop_remainder:  # every batch is full: keep its size static, as `Dataset.batch` does
            batch = tf.nest.map_structure(
                lambda t: tf.ensure_shape(t, [batch_size, *t.shape[1:]]), batch
            )
        source = batch["obj"] if per_sample else obj
        patches = ops.extract_patches(source, batch["positions"], N, interpolation)
        return patches if targets is None else (patches, batch["targets"])

    dataset = dataset.map(extract, num_parallel_calls=num_parallel_calls, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _check_parallel_calls(value) -> int:
    """A positive int or `tf.data.AUTOTUNE`; checked here, as `map` checks only when iterated."""
    message = (
        "`num_parallel_calls` must be a positive int or `tf.data.AUTOTUNE`. "
        f"Received: num_parallel_calls={value!r}"
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(message)
    if value < 1 and value != tf.data.AUTOTUNE:
        raise ValueError(message)
    return int(value)
