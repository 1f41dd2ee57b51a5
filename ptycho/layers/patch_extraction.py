"""The `PatchExtractionLayer` Keras layer."""

from __future__ import annotations

import keras
import tensorflow as tf

from ptycho import _validation, ops

__all__ = ["PatchExtractionLayer"]


@keras.saving.register_keras_serializable(package="ptycho")
class PatchExtractionLayer(keras.layers.Layer):
    """Extracts the `N x N` object patch at every scan position.

    A fused translate-and-slice: each patch reads only the `(N + 1) x (N + 1)` window of
    the object under it and blends it with the bilinear weights of the position's
    fractional part, in one XLA-compiled kernel. No translated, padded or repeated copy of
    the object is made per patch. Coordinates follow :mod:`ptycho.ops`:
    `patch[i, j] = obj(y + i - N // 2, x + j - N // 2)` for a position `[x, y]`, with zero
    fill outside the object.

    Eager calls run as XLA programs of a few fixed sizes (a power of two of 16 MiB chunks),
    so a new number of positions rarely recompiles XLA, and peak memory stays near the
    size of the output. Inside a
    `tf.function` or a compiled Keras model the whole batch goes through one kernel.
    Gradients flow to the object and to the positions.

    Args:
        N: patch size in pixels, a positive int.
        interpolation: `"bilinear"` (default), `"nearest"` or `"fourier"` (a band-limited
            shift of the integer window with a margin of 16 pixels on every side; see
            `interpolation="fourier"` in the README's "On-graph use" section for its
            accuracy and artefacts).
        **kwargs: base layer arguments (`name`, `dtype`, ...). `autocast` is always
            False: Keras never casts the inputs (see `call`).

    Call arguments (as `layer(obj, positions)` or, the Keras multi-input form,
    `layer([obj, positions])`):
        obj: the object. `(height, width)` or `(1, height, width, 1)`: one object shared by
            every position. `(batch, height, width, 1)`: one object per group (channel
            positions) or per position (flat positions). complex64 and complex128 are kept
            as they are; real float objects are cast to the layer's compute dtype.
        positions: `(batch, 1, 2, c)` (channel format, `[x, y]` on axis 2) or `(P, 2)`
            (flat), in object pixels.

    Input shape:
        `obj`: `(height, width)` or `(batch, height, width, 1)`.
        `positions`: `(batch, 1, 2, c)` or `(P, 2)`.

    Output shape:
        `(batch, N, N, c)` for channel positions, `(P, N, N, 1)` for flat positions.

    Example:

    >>> import numpy as np
    >>> obj = np.zeros((32, 32), np.complex64)
    >>> obj[10, 20] = 1 + 1j
    >>> layer = PatchExtractionLayer(N=8)
    >>> patches = layer(obj, np.array([[20.0, 10.0], [20.5, 10.0]], np.float32))
    >>> patches.shape
    TensorShape([2, 8, 8, 1])
    >>> complex(patches[0, 4, 4, 0]), complex(patches[1, 4, 4, 0])
    ((1+1j), (0.5+0.5j))
    """

    def __init__(self, N: int, interpolation: str = "bilinear", **kwargs):
        # Inputs are converted by `call`: positions must never be cast to a low-precision
        # float, and complex objects never to a real dtype. With `autocast=False` (public
        # Keras API) Keras leaves float inputs as they are; the layer has no weights, so
        # the flag changes nothing else.
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.N = _validation.check_size(N)
        self.interpolation = _validation.check_interpolation(interpolation)
        self.supports_jit = True

    def __call__(self, obj, positions=None, **kwargs):
        obj, positions = _pair(obj, positions, "inputs")
        # Keras passes only tensors positionally; arrays are converted here, without the
        # dtype cast Keras would apply.
        return super().__call__(_as_input(obj, "obj"), _as_input(positions, "positions"), **kwargs)

    def call(self, obj, positions=None):
        obj, positions = _pair(obj, positions, "inputs")
        obj = _validation.as_object(obj, dtype=tf.as_dtype(self.compute_dtype))
        return ops.extract_patches(obj, positions, self.N, self.interpolation)

    def compute_output_shape(self, obj_shape, positions_shape=None):
        obj_shape, positions_shape = _pair(obj_shape, positions_shape, "input_shape")
        positions_shape = tuple(positions_shape)
        if len(positions_shape) == 4:
            return (positions_shape[0], self.N, self.N, positions_shape[3])
        if len(positions_shape) == 2:
            return (positions_shape[0], self.N, self.N, 1)
        raise ValueError(
            "`positions` must have shape (B, 1, 2, c) or (P, 2). "
            f"Received: positions.shape={positions_shape}"
        )

    def compute_output_spec(self, obj, positions=None):
        obj, positions = _pair(obj, positions, "inputs")
        dtype = keras.backend.standardize_dtype(obj.dtype)
        if "complex" not in dtype:
            dtype = self.compute_dtype
        shape = self.compute_output_shape(obj.shape, positions.shape)
        return keras.KerasTensor(shape, dtype=dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"N": self.N, "interpolation": self.interpolation})
        return config


def _pair(first, second, name: str):
    """`(obj, positions)` from the two-argument form or Keras's list form `[obj, positions]`."""
    if second is not None:
        return first, second
    if isinstance(first, list | tuple) and len(first) == 2 and not _is_shape(first):
        return first[0], first[1]
    raise TypeError(
        f"Pass the object and the positions: `layer(obj, positions)` or `layer([obj, positions])`. "
        f"Received: {name} of type {type(first).__name__}"
        + (f" and length {len(first)}" if isinstance(first, list | tuple) else "")
    )


def _is_shape(value) -> bool:
    """A single shape such as `(512, 512)`, as opposed to a pair of shapes or tensors."""
    return all(item is None or isinstance(item, int) for item in value)


def _as_input(value, name: str):
    if isinstance(value, keras.KerasTensor | tf.Tensor):
        return value
    return _validation.to_tensor(value, name)
