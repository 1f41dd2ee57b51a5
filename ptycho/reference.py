"""Float64 reference patches, computed independently of TensorFlow with SciPy.

This is the oracle of the contract (`shared/CONVENTIONS.md`): the test suite and the
`python -m ptycho` demonstration measure the XLA kernels against it.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

__all__ = ["oracle_patches"]


def oracle_patches(obj, positions, N, interpolation="bilinear"):
    """`(P, N, N)` patches of a 2-D object at `(P, 2)` positions `[x, y]`, in float64.

    Bilinear: `scipy.ndimage.map_coordinates(order=1, mode="grid-constant", cval=0)` on the
    real and imaginary parts separately, exactly as `shared/CONVENTIONS.md` states.
    Nearest: the pixel at `floor(coord + 1/2)` (computed from the split position), zero
    outside the object.
    """
    obj = np.asarray(obj)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    steps = np.arange(N) - N // 2
    out = np.zeros((len(positions), N, N), dtype=np.complex128)
    height, width = obj.shape
    for p, (x, y) in enumerate(positions):
        if interpolation == "bilinear":
            rows, cols = np.meshgrid(y + steps, x + steps, indexing="ij")
            parts = [
                map_coordinates(
                    part.astype(np.float64), [rows, cols], order=1, mode="grid-constant", cval=0.0
                )
                for part in (obj.real, obj.imag)
            ]
            out[p] = parts[0] + 1j * parts[1]
        else:
            row = np.floor(y) + (y - np.floor(y) >= 0.5) + steps
            col = np.floor(x) + (x - np.floor(x) >= 0.5) + steps
            rr, cc = np.meshgrid(row.astype(np.int64), col.astype(np.int64), indexing="ij")
            inside = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
            out[p][inside] = obj[rr[inside], cc[inside]]
    return out
