"""Test helpers: the float64 oracle of the contract and input generators."""

import numpy as np

from ptycho.reference import oracle_patches

__all__ = ["edge_positions", "oracle_patches", "random_object"]


def random_object(rng, shape, dtype=np.complex64):
    obj = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return obj.astype(dtype)


def edge_positions(rng, height, width, N, count, dtype=np.float32):
    """Positions inside, on and beyond every edge, plus a few fixed hard cases."""
    reach = N // 2 + 2
    pos = np.stack(
        [
            rng.uniform(-reach, width - 1 + reach, count),
            rng.uniform(-reach, height - 1 + reach, count),
        ],
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
