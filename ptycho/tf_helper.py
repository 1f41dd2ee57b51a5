"""Legacy PtychoPINN image helpers, backed by the fused XLA kernels.

`pad`, `translate`, `_channel_to_flat` and `_flat_to_channel` keep the names, signatures
and semantics of PtychoPINN's `ptycho.tf_helper`; see `shared/CONVENTIONS.md`.
"""

from __future__ import annotations

import numbers

import tensorflow as tf

from ptycho import _validation, _windows
from ptycho._memory import check_memory

__all__ = ["pad", "translate"]


def _as_images(imgs, name: str) -> tf.Tensor:
    imgs = _validation.to_tensor(imgs, name)
    if imgs.shape.rank != 4:
        raise ValueError(
            f"`{name}` must have shape (B, H, W, C). Received: {name}.shape={imgs.shape}"
        )
    return imgs


def pad(imgs, size: int) -> tf.Tensor:
    """Zero-pad the two spatial axes of `(B, H, W, C)` images by `size` on every side."""
    imgs = _as_images(imgs, "imgs")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"`size` must be a non-negative int. Received: size={size!r}")
    if size < 0:
        raise ValueError(f"`size` must be a non-negative int. Received: size={size!r}")
    size = int(size)
    if imgs.shape.is_fully_defined():
        batch, height, width, channels = imgs.shape
        padded = batch * (height + 2 * size) * (width + 2 * size) * channels
        check_memory(padded * imgs.dtype.size, "the padded images")
    return tf.pad(imgs, [[0, 0], [size, size], [size, size], [0, 0]])


def translate(imgs, offsets, interpolation: str = "bilinear") -> tf.Tensor:
    """Shift images by sub-pixel offsets, with zero fill.

    Image content moves by `+offset`: `out[b, y, x] = imgs[b](y - dy, x - dx)`, sampled
    as in :mod:`ptycho.ops`. The interpolation weights come from the fractional part of
    each offset alone, so the precision does not depend on the image size.

    Args:
        imgs: `(B, H, W, C)` images, real or complex.
        offsets: `(B, 2)` offsets `[dx, dy]` in pixels.
        interpolation: `"bilinear"`, `"nearest"` or `"fourier"`.

    Returns:
        `(B, H, W, C)` translated images in the dtype of `imgs`.
    """
    interpolation = _validation.check_interpolation(interpolation)
    imgs = _as_images(imgs, "imgs")
    if imgs.dtype not in _validation.OBJECT_DTYPES:
        raise TypeError(f"`imgs` must be complex or float. Received: imgs.dtype={imgs.dtype.name}")
    batch, height, width, channels = imgs.shape
    if height is None or width is None or channels is None:
        raise ValueError(
            "`imgs` must have a static height, width and channel count. "
            f"Received: imgs.shape={imgs.shape}"
        )
    offsets = _validation.to_tensor(offsets, "offsets")
    if offsets.shape.rank != 2 or offsets.shape[1] != 2:
        raise ValueError(
            f"`offsets` must have shape (B, 2). Received: offsets.shape={offsets.shape}"
        )
    if batch is not None and offsets.shape[0] is not None and offsets.shape[0] != batch:
        raise ValueError(
            "`offsets` must have one row per image. "
            f"Received: imgs.shape={imgs.shape} and offsets.shape={offsets.shape}"
        )
    if imgs.shape.num_elements() == 0:
        return imgs
    if not (offsets.dtype.is_floating or offsets.dtype.is_integer) or offsets.dtype.is_unsigned:
        raise TypeError(
            "`offsets` must be a float or signed integer tensor. "
            f"Received: offsets.dtype={offsets.dtype.name}"
        )
    if offsets.dtype.is_integer:
        # Negated as floats (in the dtype `as_positions` would use): the negation of the
        # most negative integer overflows.
        wide = imgs.dtype in (tf.float64, tf.complex128)
        offsets = tf.cast(offsets, tf.float64 if wide else tf.float32)
    grouped, _ = _validation.as_positions(-offsets, imgs.dtype, "offsets")
    # One object per image: its channels travel together through the kernel.
    obj_index = None if batch == 1 else tf.range(tf.shape(imgs)[0])
    out = _windows.windows(
        imgs, grouped, obj_index, (height, width), (0, 0), interpolation, "sample"
    )
    return tf.reshape(out, tf.shape(imgs))


def _channel_to_flat(img) -> tf.Tensor:
    """`(B, N, N, c)` -> `(B * c, N, N, 1)`; flat index `i = b * c + k`."""
    img = _validation.to_tensor(img, "img")
    if img.shape.rank != 4:
        raise ValueError(f"`img` must have shape (B, H, W, c). Received: img.shape={img.shape}")
    shape = tf.shape(img)
    flat = tf.transpose(img, [0, 3, 1, 2])
    return tf.reshape(flat, [-1, shape[1], shape[2], 1])


def _flat_to_channel(img, N: int | None = None, gridsize: int | None = None) -> tf.Tensor:
    """`(B * c, N, N, 1)` -> `(B, N, N, c)` with `c = gridsize**2`.

    `N` and `gridsize` default to the legacy `ptycho.params` values.
    """
    from ptycho import params

    img = _validation.to_tensor(img, "img")
    if img.shape.rank != 4:
        raise ValueError(f"`img` must have shape (B * c, N, N, 1). Received: img.shape={img.shape}")
    N = _validation.check_size(params.get("N") if N is None else N)
    gridsize = _validation.check_size(
        params.get("gridsize") if gridsize is None else gridsize, "gridsize"
    )
    c = gridsize**2
    if tuple(img.shape[1:]) != (N, N, 1):
        raise ValueError(
            f"`img` must have shape (B * c, N, N, 1) with N={N}. Received: img.shape={img.shape}"
        )
    rows = img.shape[0]
    if rows is not None and rows % c:
        raise ValueError(
            f"`img` must hold a multiple of gridsize**2={c} patches. "
            f"Received: img.shape={img.shape}"
        )
    chan = tf.reshape(img, [-1, c, N, N])
    return tf.transpose(chan, [0, 2, 3, 1])
