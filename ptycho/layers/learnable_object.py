"""`LearnableObject`: a complex object held as trainable weights, patched at positions."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ptycho import ops
from ptycho.layers.patch_extraction import PatchExtractionLayer

__all__ = ["LearnableObject"]


@keras.saving.register_keras_serializable(package="ptycho")
class LearnableObject(keras.layers.Layer):
    """A trainable complex object; called on scan positions, it returns the object patches.

    The object is stored as two real weights, `real` and `imag`, so every Keras optimizer
    updates it; :attr:`value` gives the complex object. This is the unknown of a
    gradient-based reconstruction:

    >>> import numpy as np
    >>> layer = LearnableObject((64, 64), N=16)
    >>> layer(np.array([[32.0, 32.0], [40.5, 30.25]], np.float32)).shape
    TensorShape([2, 16, 16, 1])
    >>> layer.value.dtype.name
    'complex64'

    Args:
        object_shape: `(height, width)` of the object.
        N: patch size.
        interpolation: as for :class:`PatchExtractionLayer`.
        initial: the starting object, an array of shape `object_shape` (complex or real);
            by default ones (amplitude 1, phase 0).
        **kwargs: base layer arguments. `dtype="float64"` holds the object in float64
            weights and returns complex128 patches; the default is float32 and complex64.
            A mixed-precision policy does not lower the weights: complex arithmetic has no
            16-bit type.

    Call arguments:
        positions: `(B, 1, 2, c)` or `(P, 2)` scan positions `[x, y]`, as for
            :class:`PatchExtractionLayer`.

    Input shape:
        `(batch, 1, 2, c)` or `(P, 2)`.

    Output shape:
        `(batch, N, N, c)` or `(P, N, N, 1)`, complex64 (complex128 with float64 weights).
    """

    def __init__(
        self, object_shape, N: int, interpolation: str = "bilinear", initial=None, **kwargs
    ):
        dtype = kwargs.pop("dtype", None)
        precision = "float64" if _is_float64(dtype) else "float32"
        super().__init__(dtype=precision, autocast=False, **kwargs)
        height, width = ops.check_object_shape(object_shape)
        self.object_shape = (height, width)
        self.extract = PatchExtractionLayer(N, interpolation, dtype=precision)
        start = np.ones(self.object_shape, np.complex128) if initial is None else initial
        start = np.asarray(start)
        if start.shape != self.object_shape:
            raise ValueError(
                f"`initial` must have shape {self.object_shape}. Received: {start.shape}"
            )
        self.real = self.add_weight(
            shape=self.object_shape, initializer=_constant(start.real), name="real"
        )
        self.imag = self.add_weight(
            shape=self.object_shape, initializer=_constant(np.imag(start)), name="imag"
        )
        self.built = True

    @property
    def N(self) -> int:
        return self.extract.N

    @property
    def value(self) -> tf.Tensor:
        """The complex object, `(height, width)`."""
        return tf.complex(self.real, self.imag)

    def call(self, positions):
        return self.extract(self.value, positions)

    def compute_output_shape(self, positions_shape):
        return self.extract.compute_output_shape(self.object_shape, positions_shape)

    def compute_output_spec(self, positions):
        dtype = "complex128" if self.real.dtype == "float64" else "complex64"
        return keras.KerasTensor(self.compute_output_shape(positions.shape), dtype=dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "object_shape": self.object_shape,
                "N": self.N,
                "interpolation": self.extract.interpolation,
            }
        )
        return config


def _is_float64(dtype) -> bool:
    if dtype is None:
        return False
    if isinstance(dtype, keras.DTypePolicy):
        dtype = dtype.variable_dtype
    elif isinstance(dtype, dict):  # a serialized policy
        dtype = dtype.get("config", {}).get("name")
    return str(dtype) in ("float64", "complex128")


def _constant(values):
    values = np.array(values, np.float64)

    def initializer(shape, dtype=None):
        return tf.constant(values, dtype=dtype)

    return initializer
