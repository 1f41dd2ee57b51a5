"""`patch_dataset`: patches extracted lazily and in parallel by a `tf.data` pipeline."""

from __future__ import annotations

import tensorflow as tf

from ptycho import ops

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
        shuffle: shuffle the positions every epoch.
        seed: shuffling seed. With a seed, the order of every epoch is reproducible.
        drop_remainder: drop the last, smaller batch.
        num_parallel_calls: batches extracted in parallel.

    Returns:
        A dataset of `(batch, N, N, c)` (or `(batch, N, N, 1)`) patches, or of
        `(patches, targets)` pairs, in the object's dtype. Batches come in a fixed order
        for a given seed, whatever the parallelism.
    """
    N = ops.check_size(N)
    batch_size = ops.check_size(batch_size, "batch_size")
    interpolation = ops.check_interpolation(interpolation)
    obj = ops.as_object(obj)
    positions = ops.to_tensor(positions, "positions")
    ops.as_positions(positions, obj.dtype)  # validate shape, dtype and values early
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
        items["targets"] = tf.nest.map_structure(lambda t: ops.to_tensor(t, "targets"), targets)
        for leaf in tf.nest.flatten(items["targets"]):
            if leaf.shape.rank == 0 or leaf.shape[0] != count:
                raise ValueError(
                    "`targets` must have the same first dimension as `positions`. "
                    f"Received: {leaf.shape} and positions.shape={positions.shape}"
                )

    dataset = tf.data.Dataset.from_tensor_slices(items)
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    def extract(batch):
        source = batch["obj"] if per_sample else obj
        patches = ops.extract_patches(source, batch["positions"], N, interpolation)
        return patches if targets is None else (patches, batch["targets"])

    dataset = dataset.map(extract, num_parallel_calls=num_parallel_calls, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
