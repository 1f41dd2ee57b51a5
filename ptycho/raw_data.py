"""Legacy PtychoPINN patch-extraction entry points.

The names and signatures are those of PtychoPINN's `ptycho.raw_data`, so existing code
runs unchanged; the batched paths delegate to :class:`ptycho.layers.PatchExtractionLayer`.
Shapes follow `shared/CONVENTIONS.md`: offsets in the flat format `(B * c, 1, 2, 1)`
with flat index `i = b * c + k`, patches in the channel format `(B, N, N, c)`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ptycho import _validation, tf_helper
from ptycho.layers import PatchExtractionLayer
from ptycho.params import resolve

__all__ = ["get_image_patches"]


def _check_padded_inputs(gt_padded, offsets_f, N, B, c):
    N = _validation.check_size(N)
    B = _validation.check_size(B, "B")
    c = _validation.check_size(c, "c")
    gt_padded = _validation.to_tensor(gt_padded, "gt_padded")
    if gt_padded.shape.rank != 4 or gt_padded.shape[0] != 1 or gt_padded.shape[3] != 1:
        raise ValueError(
            "`gt_padded` must have shape (1, H + 2 * (N // 2), W + 2 * (N // 2), 1). "
            f"Received: gt_padded.shape={gt_padded.shape}"
        )
    offsets_f = _validation.to_tensor(offsets_f, "offsets_f")
    if offsets_f.shape.rank != 4 or tuple(offsets_f.shape[1:]) != (1, 2, 1):
        raise ValueError(
            "`offsets_f` must have shape (B * c, 1, 2, 1). "
            f"Received: offsets_f.shape={offsets_f.shape}"
        )
    if offsets_f.shape[0] != B * c:
        raise ValueError(
            f"`offsets_f` must hold B * c = {B * c} offsets (B={B}, c={c}). "
            f"Received: offsets_f.shape={offsets_f.shape}"
        )
    return gt_padded, offsets_f, N, B, c


def _layer_for(obj: tf.Tensor, N: int) -> PatchExtractionLayer:
    """A layer that keeps the object's dtype, real dtypes included."""
    return PatchExtractionLayer(N, dtype=None if obj.dtype.is_complex else obj.dtype.name)


def _get_image_patches_iterative(gt_padded, offsets_f, N, B, c) -> tf.Tensor:
    """The preserved legacy loop: one whole-object `translate` per patch.

    Patch `i` is `translate(gt_padded, -offsets_f[i, :, :, 0])[0, :N, :N, 0]` and goes to
    `[i // c, :, :, i % c]`. Kept as the reference implementation; it is slow by design.
    """
    gt_padded, offsets_f, N, B, c = _check_padded_inputs(gt_padded, offsets_f, N, B, c)
    _validation.as_object(gt_padded, "gt_padded")
    canvas = np.zeros((B, N, N, c), dtype=gt_padded.dtype.as_numpy_dtype)
    for i in range(B * c):
        offset = -offsets_f[i, :, :, 0]
        translated = tf_helper.translate(gt_padded, offset)
        canvas[i // c, :, :, i % c] = translated[0, :N, :N, 0].numpy()
    return tf.convert_to_tensor(canvas)


def _get_image_patches_batched(gt_padded, offsets_f, N, B, c) -> tf.Tensor:
    """Same inputs and output as :func:`_get_image_patches_iterative`, without the loop.

    `gt_padded` is the object zero-padded by `N // 2`; the padding is dropped and the
    patches are extracted from the object itself, which gives the same result because
    the layer fills with zeros outside the object.
    """
    gt_padded, offsets_f, N, B, c = _check_padded_inputs(gt_padded, offsets_f, N, B, c)
    half = N // 2
    height, width = gt_padded.shape[1], gt_padded.shape[2]
    if height is None or width is None or height <= 2 * half or width <= 2 * half:
        raise ValueError(
            f"`gt_padded` must be padded by N // 2 = {half} on every side of a non-empty object. "
            f"Received: gt_padded.shape={gt_padded.shape}"
        )
    obj = gt_padded[:, half : height - half, half : width - half, :]
    positions = tf.transpose(tf.reshape(offsets_f, [B, c, 2]), [0, 2, 1])[:, None]
    return _layer_for(obj, N)(obj, positions)


def get_image_patches(
    gt_image, global_offsets, local_offsets, N=None, gridsize=None, config=None
) -> tf.Tensor:
    """Patches of `gt_image` at `global_offsets + local_offsets`.

    Settings are taken by precedence: the explicit `N` and `gridsize`, then `config` (a
    `ModelConfig` or `TrainingConfig`), then the legacy `ptycho.params.cfg`, then the
    defaults. `use_batched_patch_extraction` picks the batched layer (default) or the
    preserved loop.

    Args:
        gt_image: the object, `(H, W)`, `(H, W, 1)` or `(1, H, W, 1)`.
        global_offsets: `(B, 1, 2, 1)` or `(B, 1, 2, c)` group positions `[x, y]`.
        local_offsets: `(B, 1, 2, c)` member offsets from the group position.
        N: patch size.
        gridsize: group side; `c` must equal `gridsize**2`.
        config: optional `ModelConfig` or `TrainingConfig`.

    Returns:
        `(B, N, N, c)` patches in the dtype of `gt_image`.
    """
    N = _validation.check_size(resolve("N", N, config))
    gridsize = _validation.check_size(resolve("gridsize", gridsize, config), "gridsize")
    batched = resolve("use_batched_patch_extraction", None, config)
    c = gridsize**2

    gt_image = _validation.to_tensor(gt_image, "gt_image")
    if gt_image.shape.rank == 3 and gt_image.shape[-1] == 1:
        gt_image = gt_image[..., 0]
    obj = _validation.as_object(gt_image, "gt_image")
    if obj.shape[0] != 1:
        raise ValueError(
            "`gt_image` must be one object: (H, W), (H, W, 1) or (1, H, W, 1). "
            f"Received: gt_image.shape={gt_image.shape}"
        )
    global_offsets = _validation.to_tensor(global_offsets, "global_offsets")
    local_offsets = _validation.to_tensor(local_offsets, "local_offsets")
    for name, value in (("global_offsets", global_offsets), ("local_offsets", local_offsets)):
        if not (value.dtype.is_floating or value.dtype.is_integer):  # not bool, complex, str
            raise TypeError(
                f"`{name}` must be a real number tensor (float or integer). "
                f"Received: {name}.dtype={value.dtype.name}"
            )
        if value.shape.rank != 4 or tuple(value.shape[1:3]) != (1, 2):
            raise ValueError(
                f"`{name}` must have shape (B, 1, 2, c). Received: {name}.shape={value.shape}"
            )
    if local_offsets.shape[3] != c:
        raise ValueError(
            f"`local_offsets` must have gridsize**2 = {c} channels. "
            f"Received: local_offsets.shape={local_offsets.shape}"
        )
    if global_offsets.shape[0] != local_offsets.shape[0] or global_offsets.shape[3] not in (1, c):
        raise ValueError(
            "`global_offsets` must have shape (B, 1, 2, 1) or (B, 1, 2, c) matching "
            f"`local_offsets`. Received: global_offsets.shape={global_offsets.shape} and "
            f"local_offsets.shape={local_offsets.shape}"
        )
    dtype = tf.float64 if tf.float64 in (global_offsets.dtype, local_offsets.dtype) else tf.float32
    positions = tf.cast(global_offsets, dtype) + tf.cast(local_offsets, dtype)
    if batched:
        return _layer_for(obj, N)(obj, positions)
    B = positions.shape[0]
    gt_padded = tf_helper.pad(obj, N // 2)
    return _get_image_patches_iterative(gt_padded, tf_helper._channel_to_flat(positions), N, B, c)
