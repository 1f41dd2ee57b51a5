"""`LearnableObject`: a complex object held as trainable weights, patched at positions."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ptycho import _validation
from ptycho._memory import check_memory
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
        height, width = _validation.check_object_shape(object_shape)
        self.object_shape = (height, width)
        start = None if initial is None else np.asarray(initial)
        if start is not None and start.shape != self.object_shape:
            raise ValueError(
                f"`initial` must have shape {self.object_shape}. Received: {start.shape}"
            )
        itemsize = 8 if precision == "float64" else 4
        check_memory(
            _construction_bytes(height * width, itemsize, start is not None),
            f"`object_shape`={self.object_shape} in {precision}",
            "Choose a smaller `object_shape`.",
        )
        self.extract = PatchExtractionLayer(N, interpolation, dtype=precision)
        if start is None:  # ones: amplitude 1, phase 0
            real, imag = "ones", "zeros"
        else:
            real = _constant(start.real)
            imag = _constant(start.imag) if np.iscomplexobj(start) else "zeros"
        self.real = self.add_weight(shape=self.object_shape, initializer=real, name="real")
        self.imag = self.add_weight(shape=self.object_shape, initializer=imag, name="imag")
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


def _construction_bytes(pixels: int, itemsize: int, from_initial: bool) -> int:
    """Peak bytes of building the weights: both weights, and while one is set, its
    starting value (converted from `initial` into the weights' dtype, then into a tensor:
    two copies)."""
    return pixels * itemsize * (2 + (2 if from_initial else 1))


def _constant(values):
    """An initializer giving `values`, converted only when called (no float64 copy)."""

    def initializer(shape, dtype=None):
        return tf.constant(np.asarray(values, dtype=dtype))

    return initializer
