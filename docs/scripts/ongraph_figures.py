"""The on-graph figures: `python docs/scripts/ongraph_figures.py`.

Adjoint: `|<A x, y> - <x, A^H y>| / |<A x, y>|` in complex128, positions on and beyond every
edge, with `A^H` taken both from the gradient tape and from `reassemble_patches`.
Positions: the analytic gradient against a central difference (step 1e-4 pixel) on a smooth
object, away from integer crossings.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from ptycho import extract_patches, reassemble_patches


def adjoint_error(rng, interpolation: str, trials: int = 5) -> float:
    worst = 0.0
    for trial in range(trials):
        H, W, N = 37 + trial, 29 + 2 * trial, 9 + trial
        x = tf.constant(rng.standard_normal((H, W)) + 1j * rng.standard_normal((H, W)))
        positions = np.stack([rng.uniform(-N, W + N, 200), rng.uniform(-N, H + N, 200)], 1)
        y = rng.standard_normal((200, N, N, 1)) + 1j * rng.standard_normal((200, N, N, 1))
        with tf.GradientTape() as tape:
            tape.watch(x)
            ax = extract_patches(x, positions, N, interpolation)
            inner = tf.math.real(tf.reduce_sum(ax * np.conj(y)))
        lhs = np.vdot(y, ax.numpy())
        for ahy in (
            tape.gradient(inner, x),
            reassemble_patches(y, positions, (H, W), False, interpolation),
        ):
            worst = max(worst, abs(lhs - np.vdot(ahy.numpy(), x.numpy())) / abs(lhs))
    return worst


def position_gradient_error(rng, interpolation: str, count: int = 50, step: float = 1e-4):
    yy, xx = np.mgrid[0:64, 0:64]
    amplitude = 1 + 0.3 * np.cos(2 * np.pi * (0.023 * xx - 0.019 * yy))
    obj = amplitude * np.exp(2j * np.pi * (0.031 * yy + 0.047 * xx))
    positions = rng.integers(20, 44, (count, 2)) + rng.uniform(0.2, 0.8, (count, 2))
    weights = rng.standard_normal((count, 12, 12, 1)) + 1j * rng.standard_normal((count, 12, 12, 1))

    def loss(p):
        patches = extract_patches(obj, p, 12, interpolation)
        return tf.reduce_sum(tf.math.real(patches * weights) + tf.abs(patches) ** 2)

    variable = tf.Variable(positions)
    with tf.GradientTape() as tape:
        value = loss(variable)
    analytic = tape.gradient(value, variable).numpy()
    worst = 0.0
    for index in np.ndindex(positions.shape):
        plus, minus = positions.copy(), positions.copy()
        plus[index] += step
        minus[index] -= step
        numeric = (loss(plus).numpy() - loss(minus).numpy()) / (2 * step)
        worst = max(worst, abs(analytic[index] - numeric) / abs(numeric))
    return worst


def main():
    rng = np.random.default_rng(0)
    for interpolation in ("bilinear", "nearest", "fourier"):
        error = adjoint_error(rng, interpolation)
        print(f"adjoint, {interpolation}: worst relative error {error:.2e} (target 1e-10)")
    for interpolation in ("bilinear", "fourier"):
        error = position_gradient_error(rng, interpolation)
        print(
            f"position gradient, {interpolation}: worst relative error against central "
            f"differences {error:.2e} over 100 coordinates (target 1e-5)"
        )


if __name__ == "__main__":
    main()
