"""Argument checks of the public functions: types, shapes, dtypes and values.

Every public entry point (:mod:`ptycho.ops`, the layers, the legacy shims, the
pipeline) converts and checks its arguments here, so that the kernels below it
(:mod:`ptycho._kernel`, :mod:`ptycho._windows`) receive validated tensors and static
Python values only. Each check raises `TypeError` or `ValueError` naming the argument.
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

__all__ = [
    "INTERPOLATIONS",
    "OBJECT_DTYPES",
    "REAL_DTYPES",
    "as_object",
    "as_patches",
    "as_positions",
    "check_interpolation",
    "check_min_weight",
    "check_object_shape",
    "check_size",
    "patches_layout",
    "per_sample_index",
    "real_dtype",
    "to_tensor",
]

INTERPOLATIONS = ("bilinear", "nearest", "fourier")

REAL_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
OBJECT_DTYPES = (*REAL_DTYPES, tf.complex64, tf.complex128)


def check_size(N, name: str = "N") -> int:
    """Validate a patch size: a positive Python or numpy integer."""
    if isinstance(N, bool) or not isinstance(N, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive int. Received: {name}={N!r}")
    if N < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={N!r}")
    return int(N)


def check_interpolation(interpolation) -> str:
    """Validate an interpolation name: one of `INTERPOLATIONS`."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"`interpolation` must be one of {INTERPOLATIONS}. "
            f"Received: interpolation={interpolation!r}"
        )
    return interpolation


def as_object(obj, name: str = "obj", dtype=None) -> tf.Tensor:
    """Convert an object to a `(B, H, W, 1)` tensor, checking dtype and shape."""
    obj = to_tensor(obj, name)
    if obj.dtype not in OBJECT_DTYPES:
        raise TypeError(
            f"`{name}` must be complex64, complex128 or a float dtype. "
            f"Received: {name}.dtype={obj.dtype.name}"
        )
    shape = obj.shape
    if shape.rank == 2:
        obj = obj[None, :, :, None]
    elif shape.rank != 4 or shape[-1] != 1:
        raise ValueError(
            f"`{name}` must have shape (H, W) or (B, H, W, 1). Received: {name}.shape={shape}"
        )
    height, width = obj.shape[1], obj.shape[2]
    if height is None or width is None:
        raise ValueError(
            f"`{name}` must have a static height and width. Received: {name}.shape={shape}"
        )
    if obj.shape.num_elements() == 0:
        raise ValueError(f"`{name}` must not be empty. Received: {name}.shape={shape}")
    if dtype is not None and not obj.dtype.is_complex and obj.dtype != dtype:
        obj = tf.cast(obj, dtype)
    return obj


def as_positions(positions, obj_dtype: tf.DType, name: str = "positions"):
    """Convert positions to `(G, c, 2)` in the compute dtype.

    Returns the converted positions and whether they came in the channel format
    `(B, 1, 2, c)` (otherwise flat `(P, 2)`).
    """
    positions = to_tensor(positions, name)
    if not (positions.dtype.is_floating or positions.dtype.is_integer):
        raise TypeError(
            f"`{name}` must be a real number tensor. Received: {name}.dtype={positions.dtype.name}"
        )
    shape = positions.shape
    if shape.rank == 2 and shape[1] == 2:
        channel = False
        grouped = positions[:, None, :]
    elif shape.rank == 4 and shape[1] == 1 and shape[2] == 2 and shape[3] is not None:
        channel = True
        grouped = tf.transpose(positions[:, 0], [0, 2, 1])
    else:
        raise ValueError(
            f"`{name}` must have shape (B, 1, 2, c) or (P, 2). Received: {name}.shape={shape}"
        )
    wide = positions.dtype == tf.float64 or real_dtype(obj_dtype) == tf.float64
    grouped = tf.cast(grouped, tf.float64 if wide else tf.float32)
    message = f"`{name}` must be finite. Received: {name} with NaN or inf values"
    if tf.executing_eagerly():
        if not bool(tf.reduce_all(tf.math.is_finite(grouped))):
            raise ValueError(message)
        return grouped, channel
    # In a graph, a run-time check (InvalidArgumentError). XLA compiles CheckNumerics to
    # nothing, silently, where an Assert would log a warning at every compilation; there
    # the kernels make the patches of non-finite positions NaN. The check reads a
    # stopped-gradient copy: the gradient of CheckNumerics would itself be checked.
    check = tf.debugging.check_numerics(tf.stop_gradient(grouped), message)
    with tf.control_dependencies([check]):
        return tf.identity(grouped), channel


def to_tensor(value, name: str) -> tf.Tensor:
    """`value` as a tensor; a `TypeError` names `name` when it cannot be converted."""
    if isinstance(value, tf.Tensor | tf.Variable):
        return tf.convert_to_tensor(value)
    try:
        return tf.convert_to_tensor(value)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"`{name}` must be a tensor or array. Received: {name} of type {type(value).__name__}"
        ) from err


def real_dtype(dtype: tf.DType) -> tf.DType:
    """The real dtype of `dtype`: itself for a real one."""
    return dtype.real_dtype if dtype.is_complex else dtype


def per_sample_index(obj: tf.Tensor, grouped: tf.Tensor):
    """`None` for a shared object, else the object index of every group.

    When the object count is only known at run time (inside a graph), a count of one
    means a shared object, and any other count must equal the number of groups.
    """
    count = obj.shape[0]
    if count == 1:
        return None
    groups = grouped.shape[0]
    if count is not None and groups is not None and count != groups:
        raise ValueError(
            "With one object per sample, `obj` and `positions` must have the same batch size. "
            f"Received: obj.shape={obj.shape} and {groups} position groups"
        )
    index = tf.range(tf.shape(grouped)[0])
    if count is not None and groups is not None:
        return index
    count, groups = tf.shape(obj)[0], tf.shape(grouped)[0]
    check = tf.debugging.Assert(
        tf.logical_or(tf.equal(count, 1), tf.equal(count, groups)),
        [
            "With one object per sample, `obj` and `positions` must have the same batch size. "
            "Received: obj batch and position groups",
            count,
            groups,
        ],
    )
    with tf.control_dependencies([check]):
        return index * tf.cast(count > 1, index.dtype)


def check_min_weight(min_weight) -> float:
    """Validate `min_weight` of :func:`reassemble_patches`: a finite real number >= 0."""
    if isinstance(min_weight, bool) or not isinstance(min_weight, numbers.Real):
        raise TypeError(
            f"`min_weight` must be a finite number >= 0. Received: min_weight={min_weight!r}"
        )
    if not (np.isfinite(min_weight) and min_weight >= 0):
        raise ValueError(
            f"`min_weight` must be a finite number >= 0. Received: min_weight={min_weight!r}"
        )
    return float(min_weight)


def check_object_shape(object_shape) -> tuple[int, int]:
    """Validate a `(height, width)` pair of positive integers."""
    try:
        height, width = object_shape
    except (TypeError, ValueError):
        raise ValueError(
            f"`object_shape` must be (height, width). Received: object_shape={object_shape!r}"
        ) from None
    return check_size(height, "height"), check_size(width, "width")


def as_patches(patches) -> tf.Tensor:
    """Convert `(B, N, N, c)` or `(P, N, N, 1)` patches to a tensor, checking dtype and shape."""
    patches = to_tensor(patches, "patches")
    if patches.dtype not in OBJECT_DTYPES:
        raise TypeError(
            "`patches` must be complex64, complex128 or a float dtype. "
            f"Received: patches.dtype={patches.dtype.name}"
        )
    shape = patches.shape
    if shape.rank != 4 or shape[1] is None or shape[1] != shape[2]:
        raise ValueError(
            f"`patches` must have shape (B, N, N, c) or (P, N, N, 1). Received: {shape}"
        )
    return patches


def patches_layout(patches: tf.Tensor, positions, grouped, channel: bool) -> tf.Tensor:
    """Checked patches matched to their converted `(G, c, 2)` positions, in the windows
    layout `(G, N, N, c, 1)`. float16 and bfloat16 patches are cast to float32 (they are
    summed)."""
    shape = patches.shape
    expected = (grouped.shape[0], grouped.shape[1]) if channel else (grouped.shape[0], 1)
    found = (shape[0], shape[3])
    pairs = zip(found, expected, strict=True)
    if any(f is not None and e is not None and f != e for f, e in pairs):
        raise ValueError(
            "`patches` and `positions` do not match: expected patches of shape "
            f"{(expected[0], shape[1], shape[2], expected[1])}. Received: patches.shape={shape} "
            f"and positions.shape={to_tensor(positions, 'positions').shape}"
        )
    if patches.dtype in (tf.float16, tf.bfloat16):
        patches = tf.cast(patches, tf.float32)  # accumulate in float32
    return patches[..., None] if channel else patches[:, :, :, None, :]
