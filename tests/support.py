"""Test helpers: the float64 oracle of the contract and input generators."""

import numpy as np
from scipy.ndimage import map_coordinates


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


def random_object(rng, shape, dtype=np.complex64):
    obj = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return obj.astype(dtype)


def edge_positions(rng, height, width, N, count, dtype=np.float32):
    """Positions inside, on and beyond every edge, plus a few fixed hard cases."""
    reach = N // 2 + 2
    pos = np.stack(
        [rng.uniform(-reach, width - 1 + reach, count), rng.uniform(-reach, height - 1 + reach, count)],
        axis=1,
    )
    fixed = [
        [0.0, 0.0],
        [width - 1, height - 1],
        [-0.5, height / 2],
        [width - 0.5, height / 2 + 0.25],
        [width / 3, -0.75],
        [width / 3, height - 0.25],
        [-N, -N],
        [1e7, -1e7],
        [width / 2 + 0.5, height / 2 + 0.5],
    ]
    return np.concatenate([np.array(fixed), pos]).astype(dtype)
