"""A built-in, deterministic demonstration object and scan."""

from __future__ import annotations

import numpy as np

from ptycho._memory import check_memory

__all__ = ["demo_bytes", "demo_dataset", "demo_object", "demo_scan"]


def demo_object(size: int = 512, dtype=np.complex64) -> np.ndarray:
    """A `(size, size)` complex object with structure in amplitude and phase.

    The amplitude holds rings and a few discs, the phase a smooth tilt plus bumps, so that
    patches taken anywhere look different. Computed in float64, in place where it can be,
    so that its peak is 32 bytes a pixel (:func:`demo_bytes`), result included.
    """
    coords = (np.arange(size) - size / 2) / size
    y, x = np.meshgrid(coords, coords, indexing="ij", sparse=True)  # (size, 1), (1, size)
    radius = np.hypot(x, y)
    amplitude = 40 * np.pi * radius  # 0.6 + 0.3 cos(40 pi r) exp(-4 r), in place
    np.cos(amplitude, out=amplitude)
    amplitude *= 0.3
    decay = -4 * radius
    del radius
    np.exp(decay, out=decay)
    amplitude *= decay
    del decay
    amplitude += 0.6
    for cx, cy, r in ((-0.2, -0.15, 0.08), (0.18, 0.1, 0.05), (0.05, -0.25, 0.04)):
        disc = np.hypot(x - cx, y - cy) < r
        np.add(amplitude, 0.4, out=amplitude, where=disc)
        del disc
    # 2 x - y + 1.5 exp(-((x - 0.1)^2 + (y + 0.1)^2) / 0.01)
    bump = (x - 0.1) ** 2 + (y + 0.1) ** 2
    np.negative(bump, out=bump)
    bump /= 0.01
    np.exp(bump, out=bump)
    bump *= 1.5
    phase = 2.0 * x - 1.0 * y
    phase += bump
    del bump
    wave = np.zeros(phase.shape, np.complex128)  # i phase, without a casting buffer
    wave.imag = phase
    del phase
    np.exp(wave, out=wave)
    wave *= amplitude
    del amplitude
    return wave.astype(dtype)


def demo_scan(size: int, count: int, seed: int = 0, margin: float = 0.0) -> np.ndarray:
    """`(count, 2)` jittered raster positions `[x, y]` covering a `size x size` object."""
    side = int(np.ceil(np.sqrt(count)))
    steps = np.linspace(margin, size - 1 - margin, side)
    gx, gy = np.meshgrid(steps, steps)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)[:count]
    rng = np.random.default_rng(seed)
    pitch = (size - 1 - 2 * margin) / max(side - 1, 1)
    return grid + rng.uniform(-0.3, 0.3, grid.shape) * pitch


def demo_dataset(size: int = 392, N: int = 64, count: int = 1024, seed: int = 0) -> dict:
    """A dataset in the NPZ contract, generated deterministically: the embedded default.

    The object is :func:`demo_object`, the probe a soft disc with a quadratic phase
    (:func:`ptycho.reconstruction.disc_probe`), the scan a jittered raster kept `N / 2`
    pixels inside the object, and `diffraction` the far-field amplitudes computed with
    the layer, centred (zero frequency at `[N // 2, N // 2]`) as PtychoPINN's are. `Y`
    holds the true object patches at the scan positions.
    """
    check_memory(
        demo_bytes(size, N, count),
        f"the demonstration dataset of size={size}, N={N} and count={count}",
        "Choose a smaller size or count.",
    )
    from ptycho import extract_patches
    from ptycho.reconstruction import disc_probe, simulate_amplitudes

    obj = demo_object(size)
    probe = disc_probe(N)
    scan = demo_scan(size, count, seed=seed, margin=N / 2)
    return {
        "objectGuess": obj,
        "probeGuess": probe,
        "xcoords": scan[:, 0].astype(np.float64),
        "ycoords": scan[:, 1].astype(np.float64),
        "diffraction": simulate_amplitudes(obj, probe, scan.astype(np.float32)).numpy(),
        "Y": extract_patches(obj, scan.astype(np.float32), N).numpy()[..., 0],
        "scan_index": np.arange(count, dtype=np.int64),
    }


def demo_bytes(size: int, N: int, count: int) -> int:
    """Peak host memory of `demo_dataset(size, N, count)`: the larger of its two stages.

    :func:`demo_object` peaks at 32 bytes a pixel: the float64 amplitude and phase with
    the complex128 wave. Then the complex64 object and the margined table the extraction
    reads (8 bytes a pixel each), the scan (about 128 bytes a position in
    :func:`demo_scan`), and for every pixel of every pattern the patches, the exit wave
    and its FFT (complex64, 24 bytes) with the float32 amplitudes (4), or the kept
    `diffraction` (float32) with the patches of `Y` (complex64): 28 bytes, counted as 32
    for the allocator's slack (29 measured).
    """
    size, N, count = int(size), int(N), int(count)
    table = (size + 2 * (N + 1)) ** 2  # bilinear: a margin of the footprint, N + 1
    dataset = 8 * size * size + 8 * table + 128 * count + 32 * count * N * N
    return max(32 * size * size, dataset)
