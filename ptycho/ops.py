"""Patch extraction as plain TensorFlow functions.

Coordinate convention (the one place it is spelled out; everything else links here):

* The object is indexed `obj[row, col]`, rows are `y` and columns are `x`; the centre of
  pixel `(r, s)` sits at `(y=r, x=s)`.
* A position is a pair `[x, y]` in object pixels and may be fractional.
* The patch of size `N` at position `(x, y)` is
  `patch[i, j] = obj(y + i - N // 2, x + j - N // 2)`, where `obj(., .)` is the object
  interpolated at real coordinates and is zero outside the object (bilinear interpolation
  blends toward zero within one pixel of the edge). The object pixel under the position
  therefore lands on `patch[N // 2, N // 2]`, for even and odd `N`.

Bilinear weights come from the fractional part of each position, split off before any
integer offset is added, so float32 positions keep their sub-pixel precision anywhere on
a large object.
"""

from __future__ import annotations

import tensorflow as tf

from ptycho import _kernel, _validation, _windows
from ptycho._eager import chunk_groups
from ptycho._memory import check_memory
from ptycho._validation import INTERPOLATIONS

__all__ = ["INTERPOLATIONS", "extract_patches", "reassemble_patches"]


def extract_patches(obj, positions, N: int, interpolation: str = "bilinear") -> tf.Tensor:
    """Extract the `N x N` object patch at every position.

    This is the functional form of :class:`ptycho.layers.PatchExtractionLayer`; see
    :mod:`ptycho.ops` for the coordinate convention. Eager calls run as XLA programs of a
    few fixed sizes (a power of two of 16 MiB chunks); inside a `tf.function` the whole
    batch is one XLA kernel.

    Args:
        obj: `(H, W)` or `(1, H, W, 1)` object shared by every position, or
            `(B, H, W, 1)`, one object per group (channel format) or per position (flat).
            complex64, complex128 or a real float dtype.
        positions: `(B, 1, 2, c)` (channel format) or `(P, 2)` (flat), `[x, y]` in object
            pixels. Finite positions however far off the object give zero patches.
        N: patch size.
        interpolation: `"bilinear"`, `"nearest"` or `"fourier"` (band-limited: the
            integer window with a 16-pixel margin shifted by a phase ramp).

    Returns:
        `(B, N, N, c)` for channel positions, `(P, N, N, 1)` for flat positions, in the
        object's dtype. Differentiable with respect to the object and the positions.

    Raises:
        TypeError: an argument of the wrong type or dtype.
        ValueError: a shape outside the contract; a request larger than the free memory;
            called eagerly, a NaN or infinite position.
        tf.errors.InvalidArgumentError: at run time, in a `tf.function` or `tf.data`
            graph, for a NaN or infinite position. Inside an XLA-compiled function
            (`jit_compile=True`), where TensorFlow drops run-time checks, the patch of
            such a position is all NaN instead, for every interpolation, and so are its
            gradients: never a valid-looking patch.

    Example:
        >>> import numpy as np
        >>> from ptycho import extract_patches
        >>> obj = np.arange(36, dtype=np.complex64).reshape(6, 6)
        >>> patches = extract_patches(obj, [[2.0, 3.0], [2.5, 3.0]], N=2)
        >>> patches.shape
        TensorShape([2, 2, 2, 1])
        >>> complex(patches[0, 1, 1, 0]), complex(patches[1, 1, 1, 0])  # obj[3, 2], between
        ((20+0j), (20.5+0j))
    """
    N = _validation.check_size(N)
    interpolation = _validation.check_interpolation(interpolation)
    obj = _validation.as_object(obj)
    grouped, channel = _validation.as_positions(positions, obj.dtype)
    obj_index = _validation.per_sample_index(obj, grouped)
    if grouped.shape[0] is not None:
        patches = grouped.shape[0] * grouped.shape[1]
        # Eagerly, the kernels run one chunk at a time; in a graph, on every patch at once.
        buffered = None
        if tf.executing_eagerly():
            buffered = chunk_groups((N, N), grouped.shape[1], 1, obj.dtype) * grouped.shape[1]
        elements = _kernel.request_elements(
            obj.shape[1:3], obj.shape[0] or 1, patches, N, interpolation, obj.dtype, buffered
        )
        check_memory(elements * obj.dtype.size, "the patches")
    half = -(N // 2)
    win = _windows.windows(obj, grouped, obj_index, (N, N), (half, half), interpolation)
    if channel:
        return win[..., 0]  # (B, N, N, c)
    return win[:, :, :, 0, :]  # (P, N, N, 1)


def reassemble_patches(
    patches,
    positions,
    object_shape,
    normalize: bool = True,
    interpolation: str = "bilinear",
    min_weight: float = 1e-3,
) -> tf.Tensor:
    """Overlap-add patches onto an object canvas: the adjoint of :func:`extract_patches`.

    Each patch is spread over the object pixels it was read from, with the interpolation
    weights of its position, and the contributions are summed. With `normalize`, the sum
    is divided by the summed weights, so that reassembling the patches of an object gives
    the object back on every pixel the scan covers: exactly for integer positions, and
    for sub-pixel positions up to the blur of interpolating twice (bilinear weights
    average neighbouring pixels). Patches near the float maximum whose sum would
    overflow are summed at a power-of-two scale, exactly, so a finite canvas stays finite.

    Args:
        patches: `(B, N, N, c)` with channel positions `(B, 1, 2, c)`, or `(P, N, N, 1)`
            with flat positions `(P, 2)`. Complex or real.
        positions: `[x, y]` of every patch, in object pixels, as for extraction.
        object_shape: `(height, width)` of the canvas.
        normalize: divide by the summed interpolation weights (bilinear ones for
            `"fourier"`). Pixels whose summed weight is zero or below `min_weight`
            (barely or not covered) are set to zero.
        interpolation: `"bilinear"`, `"nearest"` or `"fourier"`, as used for extraction.
        min_weight: a finite number >= 0; see `normalize`.

    Returns:
        The `(height, width)` canvas in the dtype of `patches`, differentiable with
        respect to the patches (the gradient is extraction).

    Raises:
        TypeError: an argument of the wrong type or dtype.
        ValueError: patches and positions that do not match, a shape outside the
            contract, a canvas larger than the free memory, or (eagerly) a NaN or
            infinite position; in a graph, `tf.errors.InvalidArgumentError` for the latter.

    Example:
        >>> import numpy as np
        >>> from ptycho import extract_patches, reassemble_patches
        >>> obj = np.arange(36, dtype=np.complex64).reshape(6, 6)
        >>> positions = [[2.0, 2.0], [3.0, 3.0]]
        >>> canvas = reassemble_patches(extract_patches(obj, positions, 3), positions, (6, 6))
        >>> complex(canvas[2, 2]), complex(canvas[0, 0])  # covered, not covered
        ((14+0j), 0j)
    """
    interpolation = _validation.check_interpolation(interpolation)
    height, width = _validation.check_object_shape(object_shape)
    min_weight = _validation.check_min_weight(min_weight)
    patches = _validation.as_patches(patches)
    dtype = patches.dtype
    grouped, channel = _validation.as_positions(positions, patches.dtype)
    d_out = _validation.patches_layout(patches, positions, grouped, channel)  # (G, N, N, c, 1)
    check_memory(3 * height * width * 2 * dtype.real_dtype.size, "the canvas")
    N = d_out.shape[1]
    canvas = _windows.overlap_add(
        d_out, grouped, (height, width), N, interpolation, normalize, min_weight
    )
    return tf.cast(canvas, dtype)
