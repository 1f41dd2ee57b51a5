"""XLA kernels behind :func:`ptycho.ops.extract_patches` and :func:`ptycho.tf_helper.translate`.

Nothing here validates its input: :mod:`ptycho._validation` does that, and
:mod:`ptycho._windows` calls these kernels
with static Python values for every shape-like argument.

Terms used below:

* *window*: the `(Nh, Nw)` output patch of one position.
* *footprint*: the integer window of the object a patch reads: `(Nh + 1, Nw + 1)` pixels
  for bilinear interpolation, `(Nh, Nw)` for nearest.
* *table*: the object as real numbers (real and imaginary parts side by side on the last
  axis), surrounded by a zero margin. Reading the table instead of the object is what makes
  the zero fill of the contract free: no sample is ever masked.

Two kernels compute the same function:

* :func:`gather_windows`, the fast forward pass for patches of a larger object. One XLA
  gather copies each footprint as a block of contiguous rows, and a fused loop applies the
  separable bilinear blend. The table's margin is as wide as a footprint, so that XLA's
  clamping of out-of-range blocks only ever moves a block that misses the object into the
  zero margin. :func:`gather_windows_vjp` is its exact adjoint (one XLA scatter).
* :func:`sample_windows`, which gathers every sample separately from a table with a
  one-pixel margin, clamping each index into that margin. It serves windows as large as
  the object (`translate`), runs without XLA, and TensorFlow differentiates it; the tests
  use it as an independent check of the block kernels and their adjoint.
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla
from tensorflow.compiler.xla import xla_data_pb2

__all__: list[str] = []


# Pixels of object read on every side of a patch by `interpolation="fourier"`.
FOURIER_MARGIN = 16


def footprint(size: tuple[int, int], interpolation: str) -> tuple[int, int]:
    """Height and width of the integer object window one patch reads."""
    extra = {"bilinear": 1, "nearest": 0, "fourier": 2 * FOURIER_MARGIN}[interpolation]
    return size[0] + extra, size[1] + extra


def request_elements(
    object_shape,
    objects: int,
    patches: int,
    N: int,
    interpolation: str,
    dtype: tf.DType = tf.complex64,
    buffered: int | None = None,
) -> int:
    """Elements of `dtype` (the object's) an extraction holds at once.

    That is the output plus the margined object table, and for `"fourier"` the two
    complex transform buffers of the `(N + 32) x (N + 32)` footprint that XLA holds for
    every patch in flight: `buffered` patches (all of them by default, as in a graph;
    one chunk when run eagerly). Measured peaks, in a `tf.function`, are within 5 % of
    this (about 5.5 times the output for N = 64). Multiply by the item size for bytes.
    The object count may be only a lower bound (1) when it is known only at run time.
    """
    fh, fw = footprint((N, N), interpolation)
    table = (object_shape[0] + 2 * fh) * (object_shape[1] + 2 * fw) * objects
    elements = patches * N * N + table
    if interpolation == "fourier":
        dtype = tf.as_dtype(dtype)
        fft_bytes = 16 if dtype in (tf.float64, tf.complex128) else 8
        in_flight = patches if buffered is None else min(buffered, patches)
        elements += -(-2 * in_flight * fh * fw * fft_bytes // dtype.size)
    return elements


@tf.function(jit_compile=True, autograph=False)
def prepare_table(obj: tf.Tensor, margin: tuple[int, int]) -> tf.Tensor:
    """`(Bo, H, W, C)` object -> `(Bo, H + 2 * my, W + 2 * mx, K)` real table.

    K is C for real input and 2 * C for complex input, laid out `(re_0, im_0, re_1, ...)`.
    """
    if obj.dtype.is_complex:
        _, height, width, channels = obj.shape
        parts = tf.stack([tf.math.real(obj), tf.math.imag(obj)], axis=-1)
        obj = tf.reshape(parts, [-1, height, width, 2 * channels])
    my, mx = margin
    return tf.pad(obj, [[0, 0], [my, my], [mx, mx], [0, 0]])


def _split(coord, shift, length, extent, index_dtype):
    """Integer start and fraction of each window (`length` pixels read) along one axis.

    The coordinate is split into its floor and fraction *before* any offset is added, so
    the fraction keeps the full precision of the input. Coordinates farther than one
    window from the object all give zero windows, so they are clamped first: this keeps
    the integer part far from overflow without changing any result.

    A NaN or infinite coordinate reads the window at 0 and gets a NaN fraction, which
    :func:`_blend` turns into an all-NaN window for every interpolation.
    """
    reach = float(length + abs(shift) + 2)
    finite = tf.math.is_finite(coord)
    coord = tf.clip_by_value(tf.where(finite, coord, tf.zeros_like(coord)), -reach, extent + reach)
    whole = tf.floor(coord)
    fraction = tf.where(finite, coord - whole, tf.constant(np.nan, coord.dtype))
    return tf.cast(whole, index_dtype) + shift, fraction


def _positions(positions, size, shift, extent, interpolation, index_dtype):
    """Window starts `(iy, ix)` in object pixels and bilinear fractions `(fy, fx)`."""
    fh, fw = footprint(size, interpolation)
    iy, fy = _split(positions[..., 1], shift[0], fh, extent[0], index_dtype)
    ix, fx = _split(positions[..., 0], shift[1], fw, extent[1], index_dtype)
    if interpolation == "nearest":
        iy += tf.cast(fy >= 0.5, index_dtype)
        ix += tf.cast(fx >= 0.5, index_dtype)
    elif interpolation == "fourier":
        iy -= FOURIER_MARGIN
        ix -= FOURIER_MARGIN
    return iy, ix, fy, fx


def _blend(win, fy, fx, interpolation, complex_out, table):
    """Interpolate patch-major `(G, c, fh, fw, K)` footprints at the fractions `(fy, fx)`.

    `fy` and `fx` have shape `(G, c)`. The bilinear weights stay real: they are cast to
    the table's real dtype, never to complex. Returns `(G, Nh, Nw, c, K)`, the channel
    layout: the blend runs on contiguous footprints, and one transpose writes the result.
    """
    if interpolation == "fourier":
        win = _fourier_shift(win, fy, fx, complex_out, tf.reduce_max(tf.abs(table)))
    elif interpolation == "bilinear":
        fx = tf.cast(fx, win.dtype)[:, :, None, None, None]
        fy = tf.cast(fy, win.dtype)[:, :, None, None, None]
        across = _lerp(win[:, :, :, :-1], win[:, :, :, 1:], fx)
        win = _lerp(across[:, :, :-1], across[:, :, 1:], fy)
    else:
        win *= _poison(fy, fx, win.dtype)
    return tf.transpose(win, [0, 2, 3, 1, 4])


@tf.custom_gradient
def _lerp(a, b, f):
    """`(1 - f) * a + f * b` for `(G, c, rows, cols, K)` values and `(G, c, 1, 1, 1)` `f`.

    Exact at `f = 0` and `f = 1`, and, unlike `a + f * (b - a)`, free of overflow when
    `a` and `b` are finite (up to rounding at the float maximum). The gradient for `f`
    is `sum(dy * (b - a))`: differentiating the convex form would subtract the two large
    sums `sum(dy * b)` and `sum(dy * a)` instead, losing precision (seven times the
    error for float32 positions over an object of values near 1000).
    """

    def grad(dy):
        d_f = tf.reduce_sum(dy * (b - a), axis=[2, 3, 4], keepdims=True)
        return (1 - f) * dy, f * dy, d_f

    return (1 - f) * a + f * b, grad


def _poison(fy, fx, dtype):
    """`(G, c, 1, 1, 1)`: 1, or NaN where a fraction is NaN (a non-finite position).

    Nearest interpolation never reads the fractions, so its windows are multiplied by
    this to become NaN, as the bilinear and Fourier ones do through their weights.
    """
    one = tf.where(tf.math.is_nan(fy + fx), tf.constant(np.nan, fy.dtype), tf.ones_like(fy))
    return tf.cast(one, dtype)[:, :, None, None, None]


def power_of_two_scales(peak):
    """Powers of two `(down, up)`, `down * up == 1`, that bring a normal `peak` into `[1, 4)`.

    `peak` (float32 or float64, non-negative) is typically the largest magnitude of some
    values. Multiplying by a power of two is exact in binary floating point (short of
    underflow far below the peak), so scaling values by `down` before a computation
    whose sums could overflow, and its result by `up` after, changes nothing else. Both
    factors are built from exponent bits. A subnormal peak gives the largest normal
    factors; a zero, infinite or NaN peak gives 1 and 1: there is nothing to save, and a
    tiny factor would flush every finite value beside an infinite one to zero.
    """
    if peak.dtype == tf.float64:
        int_dtype, mantissa, bias = tf.int64, 52, 1023
    else:
        int_dtype, mantissa, bias = tf.int32, 23, 127
    bits = tf.bitwise.right_shift(tf.bitcast(peak, int_dtype), mantissa)
    exponent = tf.bitwise.bitwise_and(bits, 2 * bias + 1) - bias  # sign bit dropped
    exponent = tf.clip_by_value(exponent, 1 - bias, bias - 1)
    usable = tf.math.is_finite(peak) & (peak > 0)
    exponent = tf.where(usable, exponent, tf.zeros_like(exponent))

    def power(e):
        return tf.bitcast(tf.bitwise.left_shift(bias + e, mantissa), peak.dtype)

    return power(-exponent), power(exponent)


@tf.custom_gradient
def rescale(values, factor):
    """`values * factor` whose gradient passes through *unscaled*.

    For a linear computation `y = up * L(down * x)` with `down * up == 1`, wrapping both
    products in this makes the gradient `L^T dy`, exactly the gradient of `L(x)`, so a
    scale chosen for the forward values cannot make the backward pass overflow.
    """

    def grad(d_values):
        return d_values, tf.zeros_like(factor)

    return values * tf.cast(factor, values.dtype), grad


@tf.custom_gradient
def _scale_gradient(values, factor):
    """`values` unchanged, its gradient multiplied by `factor`."""

    def grad(d_values):
        return d_values * tf.cast(factor, d_values.dtype), tf.zeros_like(factor)

    return tf.identity(values), grad


def _fourier_shift(win, fy, fx, complex_out, peak):
    """Band-limited shift of `(G, c, N + 2m, N + 2m, K)` footprints, cropped to `N x N`.

    Each footprint is the integer window with a margin of `m = FOURIER_MARGIN` pixels on
    every side. Its discrete Fourier transform is multiplied by the phase ramp of the
    fractional shift and transformed back; the centre `N x N` is kept. The transform
    treats the footprint as periodic, so the result is exact for content that is
    band-limited *and* periodic over the footprint. For other content the error comes
    from the samples beyond the margin that the window leaves out (about
    `amplitude / (2 pi m)` at the patch border, smaller inside) and from ringing at sharp
    edges, including the object's own border.

    `peak` is the largest magnitude in the table the footprints come from.
    """
    m = FOURIER_MARGIN
    _, _, fh, fw, k = win.shape
    real_dtype = tf.float64 if win.dtype == tf.float64 else tf.float32
    parts = tf.cast(win, real_dtype)
    # The transform sums a whole footprint, which overflows for values near the float
    # maximum: the footprints are scaled by the power of two that brings the table's
    # peak near 1, and the result back (one scalar: a pass over the small table, not
    # over every footprint). `rescale` keeps the gradient of the unscaled computation;
    # the ramps' gradient, formed from scaled spectra, is scaled back by `up`.
    down, up = power_of_two_scales(tf.stop_gradient(tf.cast(peak, real_dtype)))
    parts = rescale(parts, down)
    if complex_out:
        parts = tf.reshape(parts, tf.concat([tf.shape(win)[:-1], [k // 2, 2]], axis=0))
        z = tf.complex(parts[..., 0], parts[..., 1])
    else:
        z = tf.complex(parts, tf.zeros_like(parts))
    z = tf.transpose(z, [0, 1, 4, 2, 3])  # (G, c, C, fh, fw): transform the last two axes

    def ramp(fraction, length):
        freq = tf.constant(np.fft.fftfreq(length), real_dtype)
        phase = 2 * np.pi * tf.cast(fraction, real_dtype)[:, :, None, None] * freq
        shift = tf.complex(tf.cos(phase), tf.sin(phase))  # (G, c, 1, length)
        return _scale_gradient(shift, up)

    spectrum = tf.signal.fft2d(z)
    spectrum *= ramp(fy, fh)[..., None] * ramp(fx, fw)[:, :, :, None, :]
    z = tf.signal.ifft2d(spectrum)[:, :, :, m : fh - m, m : fw - m]
    z = rescale(z, up)
    z = tf.transpose(z, [0, 1, 3, 4, 2])  # (G, c, Nh, Nw, C)
    if complex_out:
        out = tf.stack([tf.math.real(z), tf.math.imag(z)], axis=-1)
        out = tf.reshape(out, tf.concat([tf.shape(z)[:-1], [k]], axis=0))
    else:
        out = tf.math.real(z)
    return tf.cast(out, win.dtype)


def _recombine(win, complex_out):
    """Real `(..., K)` windows -> `(..., C)`, complex when the table held pairs."""
    if not complex_out:
        return win
    k = win.shape[-1]
    win = tf.reshape(win, tf.concat([tf.shape(win)[:-1], [k // 2, 2]], axis=0))
    return tf.complex(win[..., 0], win[..., 1])


def _index_dtype(table) -> tf.DType:
    pixels = table.shape[1:3].num_elements()
    count = table.shape[0]
    if count is None or count * pixels >= 2**31:
        return tf.int64
    return tf.int32


def _gather_dimension_numbers(per_sample: bool):
    """Block gather of `(G, c, 2 or 3)` starts from `(Bo, Hp, Wp, K)` -> `(G, c, fh, fw, K)`.

    Each footprint lands contiguous (patch-major), so the blend that follows vectorises.
    """
    dims = xla_data_pb2.GatherDimensionNumbers()
    dims.offset_dims.extend([2, 3, 4])
    dims.collapsed_slice_dims.append(0)
    dims.start_index_map.extend([0, 1, 2] if per_sample else [1, 2])
    dims.index_vector_dim = 2
    return dims


@tf.function(jit_compile=True, autograph=False)
def gather_windows(table, positions, obj_index, size, shift, interpolation, complex_out):
    """Fast forward kernel.

    Args:
        table: `(Bo, Hp, Wp, K)` from :func:`prepare_table` with a margin equal to the
            footprint of `size`.
        positions: `(G, c, 2)` positions `[x, y]`, float32 or float64.
        obj_index: `None` for one shared object, else `(G,)` int object index per group.
        size: static `(Nh, Nw)`.
        shift: static `(sy, sx)`: window pixel `(i, j)` samples the object at
            `(y + sy + i, x + sx + j)`.
        interpolation: `"bilinear"` or `"nearest"`.
        complex_out: whether the table holds `(re, im)` pairs.

    Returns:
        `(G, Nh, Nw, c, C)` windows in the table's dtype, or complex.
    """
    _, hp, wp, k = table.shape
    fh, fw = footprint(size, interpolation)
    extent = (hp - 2 * fh, wp - 2 * fw)
    index_dtype = _index_dtype(table)
    iy, ix, fy, fx = _positions(positions, size, shift, extent, interpolation, index_dtype)

    starts = [iy + fh, ix + fw]  # (G, c) each
    if obj_index is not None:
        member = tf.cast(obj_index, index_dtype)[:, None] + tf.zeros_like(iy)
        starts.insert(0, member)
    win = xla.gather(
        table,
        tf.stack(starts, axis=2),
        _gather_dimension_numbers(obj_index is not None),
        [1, fh, fw, k],
        indices_are_sorted=False,
    )
    win.set_shape([positions.shape[0], positions.shape[1], fh, fw, k])  # (G, c, fh, fw, K)
    win = _blend(win, fy, fx, interpolation, complex_out, table)
    return _recombine(win, complex_out)


def _separates() -> bool:
    """Whether XLA runs the loops inside a conditional in parallel, as in the whole program.

    XLA's CPU runtime does from TensorFlow 2.20 (its thunk runtime). Up to 2.19 it ran
    them on one thread: the kernel inside a conditional took twice as long (55 against
    28 ms, measured on 2.16 to 2.19 at the default case).
    """
    major, minor = (int(part) for part in re.findall(r"\d+", tf.__version__)[:2])
    return (major, minor) >= (2, 20)


SEPARATES = _separates()


def separately(positions, compute):
    """`compute()` inside an XLA program on the CPU, written once to memory and never
    fused into its readers.

    Inside one XLA program, XLA fuses the gather and blend into every consumer of the
    windows (a loss, its gradient, a transpose), recomputing each window, and every
    per-position quantity, for each of them: a jitted forward pass with a loss took 62-63 ms
    where its parts take 23 (4,096 patches of 64 x 64). An XLA conditional is a boundary
    fusion cannot cross (`xla.optimization_barrier` is removed by XLA's CPU pipeline
    before fusion); its predicate, whether every position is finite, is known only at
    run time, and both branches compute the same thing. `compute` returns a tensor or a
    tuple of tensors. Elsewhere (:func:`_separates_here`), `compute()` runs as it is.
    """
    if tf.executing_eagerly():
        return compute()
    finite = tf.reduce_all(tf.math.is_finite(positions))
    if not _separates_here(finite):
        return compute()
    return tf.cond(finite, compute, compute)


def _separates_here(tensor) -> bool:
    """Whether a conditional made where `tensor` was made keeps its work apart, and pays.

    Only inside an XLA program (outside one, TensorFlow runs each compiled function
    whole, and a conditional would only add a call), on a TensorFlow whose XLA runs a
    conditional's loops in parallel (:data:`SEPARATES`), and on the CPU: on a GPU, an
    XLA conditional copies its predicate to the host and waits for it. Without a device
    of its own, an operation runs on the GPU where TensorFlow sees one.
    """
    if not SEPARATES or tf.__internal__.get_enclosing_xla_context() is None:
        return False
    device = tf.DeviceSpec.from_string(tensor.device or "").device_type
    if device:
        return device.upper() == "CPU"
    return not tf.config.list_logical_devices("GPU")


def sample_windows(table, positions, obj_index, size, shift, interpolation, complex_out):
    """Differentiable kernel with the same result as :func:`gather_windows`.

    `table` has a one-pixel margin. Every sample index is clamped into the table, so
    samples off the object read the zero margin.
    """
    _, hp, wp, k = table.shape
    extent = (hp - 2, wp - 2)
    index_dtype = _index_dtype(table)
    iy, ix, fy, fx = _positions(positions, size, shift, extent, interpolation, index_dtype)
    fh, fw = footprint(size, interpolation)

    def axis_indices(start, length, limit):
        steps = tf.range(1, length + 1, dtype=index_dtype)  # +1: the margin
        return tf.clip_by_value(start[:, None, :] + steps[None, :, None], 0, limit - 1)

    rows = axis_indices(iy, fh, hp)  # (G, fh, c)
    cols = axis_indices(ix, fw, wp)  # (G, fw, c)
    flat = rows[:, :, None, :] * wp + cols[:, None, :, :]  # (G, fh, fw, c)
    if obj_index is not None:
        flat += (tf.cast(obj_index, index_dtype) * (hp * wp))[:, None, None, None]
    flat = tf.transpose(flat, [0, 3, 1, 2])  # (G, c, fh, fw)
    win = tf.gather(tf.reshape(table, [-1, k]), flat)  # (G, c, fh, fw, K)
    win = _blend(win, fy, fx, interpolation, complex_out, table)  # (G, Nh, Nw, c, K)
    return _recombine(win, complex_out)


def _patch_sums(values):
    """Sum of each patch of patch-major `(G, c, rows, cols, K)` values -> `(G, c)`.

    Complex values give two real sums in one pass.

    The rows are added by repeated halving, which XLA fuses with the producer of `values`
    into one parallel, vectorised loop; only a `(G, c, cols * K)` partial sum is written.
    A plain `reduce_sum` over the patch axes is about three times slower on the CPU: XLA
    then materialises the product and reduces it on one thread.
    """
    _, c, rows, cols, k = values.shape
    values = tf.reshape(values, [-1, c, rows, cols * k])
    while values.shape[2] > 1:
        half = values.shape[2] // 2
        rest = values[:, :, 2 * half :]
        values = values[:, :, :half] + values[:, :, half : 2 * half]
        if rest.shape[2]:
            values = tf.concat([values, rest], axis=2)
    return tf.reduce_sum(values[:, :, 0], axis=-1)


def _scatter_dimension_numbers(per_sample: bool):
    """`(G, c, fh, fw, K)` blocks added into a `(Bo, Hp, Wp, K)` table, or into one
    `(Hp, Wp, K)` table for one shared object.

    Without the object axis, XLA scatters `g` as it is; with a unit object axis to insert,
    it first copies every block into a layout of its own (138 MB at the default case).
    """
    dims = xla_data_pb2.ScatterDimensionNumbers()
    dims.update_window_dims.extend([2, 3, 4])
    if per_sample:
        dims.inserted_window_dims.append(0)
        dims.scatter_dims_to_operand_dims.extend([0, 1, 2])
    else:
        dims.scatter_dims_to_operand_dims.extend([0, 1])
    dims.index_vector_dim = 2
    return dims


def _adder(dtype: tf.DType):
    @tf.function(autograph=False)
    def add(a, b):
        return a + b

    scalar = tf.TensorSpec([], dtype)
    return add.get_concrete_function(scalar, scalar)


def _as_pairs(values, complex_out):
    """`(..., C)` complex -> `(..., 2 * C)` real `(re, im)` pairs; real input unchanged."""
    if not complex_out:
        return values
    pairs = tf.stack([tf.math.real(values), tf.math.imag(values)], axis=-1)
    shape = values.shape
    return tf.reshape(pairs, tf.concat([tf.shape(values)[:-1], [2 * shape[-1]]], axis=0))


@tf.function(jit_compile=True, autograph=False)
def gather_windows_vjp(
    table,
    positions,
    obj_index,
    d_out,
    size,
    shift,
    interpolation,
    complex_out,
    margin,
    with_positions=True,
):
    """Exact adjoint of :func:`gather_windows`, for bilinear and nearest interpolation.

    Given the output gradient `d_out` `(G, Nh, Nw, c, C)`, returns the gradient of the
    *table* (the object with its margin, as real pairs) and of the positions. The object
    gradient is a bilinear overlap-add: each patch gradient is spread over its footprint
    with the same weights, then every footprint is added into the table by one XLA
    scatter. The position gradient is the analytic derivative of the blend with respect
    to the fractional parts (the integer parts are piecewise constant); without
    `with_positions` it is zero and the table's values are never read.

    It runs in stages, each written to memory once inside an XLA program on the CPU from
    TensorFlow 2.20 (:func:`separately`; elsewhere XLA fuses them as it chooses): the output
    gradient transposed to patch-major, with a zero border for bilinear interpolation;
    from it, the position gradient and the spread footprints; their scatter. Fused, XLA
    recomputed the transposed gradient (and the loss gradient that produced it) for every
    footprint pixel that read it. XLA itself inlines a stage too cheap for a conditional
    of its own: the transpose and border with one position per group (a pad alone), and
    nearest interpolation's spread (a product).
    """
    _, hp, wp, k = table.shape
    fh, fw = footprint(size, interpolation)
    extent = (hp - 2 * fh, wp - 2 * fw)
    index_dtype = _index_dtype(table)
    iy, ix, fy, fx = _positions(positions, size, shift, extent, interpolation, index_dtype)
    starts = [iy + fh, ix + fw]
    if obj_index is not None:
        starts.insert(0, tf.cast(obj_index, index_dtype)[:, None] + tf.zeros_like(iy))
    starts = tf.stack(starts, axis=2)
    # Work patch-major, `(G, c, rows, cols, K)`: each patch contiguous, weights per patch.
    # The spread below reads the gradient with a one-pixel zero border.
    border = 1 if interpolation == "bilinear" else 0

    def bordered():
        g = tf.cast(_as_pairs(d_out, complex_out), table.dtype)
        g = tf.transpose(g, [0, 3, 1, 2, 4])
        g.set_shape([positions.shape[0], positions.shape[1], size[0], size[1], k])
        return tf.pad(g, [[0, 0], [0, 0], [border, border], [border, border], [0, 0]])

    padded = separately(positions, bordered)

    def spread():
        g = padded[:, :, border : border + size[0], border : border + size[1]]
        wx = tf.cast(fx, table.dtype)[:, :, None, None, None]
        wy = tf.cast(fy, table.dtype)[:, :, None, None, None]
        d_pos = tf.zeros(tf.shape(positions), table.dtype)
        if interpolation == "bilinear" and with_positions:
            win = xla.gather(
                table,
                starts,
                _gather_dimension_numbers(obj_index is not None),
                [1, fh, fw, k],
            )
            win.set_shape([positions.shape[0], positions.shape[1], fh, fw, k])
            top_l, top_r = win[:, :, :-1, :-1], win[:, :, :-1, 1:]
            bot_l, bot_r = win[:, :, 1:, :-1], win[:, :, 1:, 1:]
            # d out / d fx and d out / d fy at every output pixel, then summed per patch:
            # the differences of neighbouring pixels (exact for close values, which keeps
            # the precision on objects with a large offset), blended with the other fraction.
            d_fx = g * _lerp(top_r - top_l, bot_r - bot_l, wy)
            d_fy = g * _lerp(bot_l - top_l, bot_r - top_r, wx)
            # Both sums in one pass over `g` and the footprints, as the parts of one
            # complex sum (half precision is summed in float32).
            if d_fx.dtype not in (tf.float32, tf.float64):
                d_fx, d_fy = tf.cast(d_fx, tf.float32), tf.cast(d_fy, tf.float32)
            sums = _patch_sums(tf.complex(d_fx, d_fy))
            d_pos = tf.stack([tf.math.real(sums), tf.math.imag(sums)], axis=-1)  # (G, c, 2)
        if interpolation == "bilinear":
            # Footprint gradient: each footprint pixel collects the four output pixels it
            # fed, which is the same separable blend applied to the zero-padded output
            # gradient with the complementary fractions.
            across = _lerp(padded[:, :, :, 1:], padded[:, :, :, :-1], wx)
            g = _lerp(across[:, :, 1:], across[:, :, :-1], wy)
        else:
            g *= _poison(fy, fx, g.dtype)  # NaN, not a silent gradient, for non-finite positions
        return d_pos, g

    d_pos, g = separately(positions, spread)

    per_sample = obj_index is not None
    zeros = tf.zeros_like(table if per_sample else table[0])
    dims = _scatter_dimension_numbers(per_sample)
    d_table = xla.scatter(zeros, starts, g, _adder(table.dtype), dims)
    if not per_sample:
        d_table = d_table[None]
    my, mx = margin
    d_obj = d_table[:, my : hp - my, mx : wp - mx, :]
    if complex_out:
        _, height, width, _ = d_obj.shape
        d_obj = tf.reshape(d_obj, [-1, height, width, k // 2, 2])
        d_obj = tf.complex(d_obj[..., 0], d_obj[..., 1])
    return d_obj, tf.cast(d_pos, positions.dtype)
