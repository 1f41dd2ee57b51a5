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

import concurrent.futures
import functools
import numbers
import os

import numpy as np
import tensorflow as tf

from ptycho import _kernel
from ptycho._memory import check_memory

__all__ = ["INTERPOLATIONS", "extract_patches", "reassemble_patches"]

INTERPOLATIONS = ("bilinear", "nearest", "fourier")

# Eager calls are cut into chunks of about this many output bytes (padded to a few fixed
# sizes), so a new number of positions does not trigger a new XLA compilation and peak
# memory stays near the size of the output. 16 MiB measured best on the 2-core reference
# machine: smaller chunks pay XLA's per-call cost (about 0.7 ms) too often, larger ones
# fall out of the 32 MiB L3 cache before they are copied into place.
CHUNK_BYTES = 16 * 2**20

REAL_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
OBJECT_DTYPES = (*REAL_DTYPES, tf.complex64, tf.complex128)


def check_size(N, name: str = "N") -> int:
    """Validate a patch size: a positive Python or numpy integer."""
    if isinstance(N, bool) or not isinstance(N, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive int. Received: {name}={N!r}")
    if N < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={N!r}")
    return int(N)


def check_interpolation(interpolation) -> str:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"`interpolation` must be one of {INTERPOLATIONS}. "
            f"Received: interpolation={interpolation!r}"
        )
    return interpolation


def as_object(obj, name: str = "obj", dtype=None) -> tf.Tensor:
    """Convert an object to a `(B, H, W, 1)` tensor, checking dtype and shape."""
    obj = to_tensor(obj, name)
    if obj.dtype not in OBJECT_DTYPES:
        raise TypeError(
            f"`{name}` must be complex64, complex128 or a float dtype. "
            f"Received: {name}.dtype={obj.dtype.name}"
        )
    shape = obj.shape
    if shape.rank == 2:
        obj = obj[None, :, :, None]
    elif shape.rank != 4 or shape[-1] != 1:
        raise ValueError(
            f"`{name}` must have shape (H, W) or (B, H, W, 1). Received: {name}.shape={shape}"
        )
    height, width = obj.shape[1], obj.shape[2]
    if height is None or width is None:
        raise ValueError(
            f"`{name}` must have a static height and width. Received: {name}.shape={shape}"
        )
    if obj.shape.num_elements() == 0:
        raise ValueError(f"`{name}` must not be empty. Received: {name}.shape={shape}")
    if dtype is not None and not obj.dtype.is_complex and obj.dtype != dtype:
        obj = tf.cast(obj, dtype)
    return obj


def as_positions(positions, obj_dtype: tf.DType, name: str = "positions"):
    """Convert positions to `(G, c, 2)` in the compute dtype.

    Returns the converted positions and whether they came in the channel format
    `(B, 1, 2, c)` (otherwise flat `(P, 2)`).
    """
    positions = to_tensor(positions, name)
    if not (positions.dtype.is_floating or positions.dtype.is_integer):
        raise TypeError(
            f"`{name}` must be a real number tensor. Received: {name}.dtype={positions.dtype.name}"
        )
    shape = positions.shape
    if shape.rank == 2 and shape[1] == 2:
        channel = False
        grouped = positions[:, None, :]
    elif shape.rank == 4 and shape[1] == 1 and shape[2] == 2 and shape[3] is not None:
        channel = True
        grouped = tf.transpose(positions[:, 0], [0, 2, 1])
    else:
        raise ValueError(
            f"`{name}` must have shape (B, 1, 2, c) or (P, 2). Received: {name}.shape={shape}"
        )
    wide = positions.dtype == tf.float64 or _kernel_real_dtype(obj_dtype) == tf.float64
    grouped = tf.cast(grouped, tf.float64 if wide else tf.float32)
    message = f"`{name}` must be finite. Received: {name} with NaN or inf values"
    if tf.executing_eagerly():
        if not bool(tf.reduce_all(tf.math.is_finite(grouped))):
            raise ValueError(message)
        return grouped, channel
    # In a graph, a run-time check (InvalidArgumentError). XLA compiles CheckNumerics to
    # nothing, silently, where an Assert would log a warning at every compilation; there
    # the kernels make the patches of non-finite positions NaN. The check reads a
    # stopped-gradient copy: the gradient of CheckNumerics would itself be checked.
    check = tf.debugging.check_numerics(tf.stop_gradient(grouped), message)
    with tf.control_dependencies([check]):
        return tf.identity(grouped), channel


def to_tensor(value, name: str) -> tf.Tensor:
    if isinstance(value, tf.Tensor | tf.Variable):
        return tf.convert_to_tensor(value)
    try:
        return tf.convert_to_tensor(value)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"`{name}` must be a tensor or array. Received: {name} of type {type(value).__name__}"
        ) from err


def _kernel_real_dtype(dtype: tf.DType) -> tf.DType:
    return dtype.real_dtype if dtype.is_complex else dtype


def extract_patches(obj, positions, N: int, interpolation: str = "bilinear") -> tf.Tensor:
    """Extract the `N x N` object patch at every position.

    This is the functional form of :class:`ptycho.layers.PatchExtractionLayer`; see
    :mod:`ptycho.ops` for the coordinate convention.

    Args:
        obj: `(H, W)` or `(1, H, W, 1)` object shared by every position, or
            `(B, H, W, 1)`, one object per group (channel format) or per position (flat).
            complex64, complex128 or a real float dtype.
        positions: `(B, 1, 2, c)` (channel format) or `(P, 2)` (flat), `[x, y]` in object
            pixels. Finite positions however far off the object give zero patches.
        N: patch size.
        interpolation: `"bilinear"`, `"nearest"` or `"fourier"` (band-limited).

    Returns:
        `(B, N, N, c)` for channel positions, `(P, N, N, 1)` for flat positions, in the
        object's dtype.

    Raises:
        ValueError: called eagerly with a NaN or infinite position.
        tf.errors.InvalidArgumentError: at run time, in a `tf.function` or `tf.data`
            graph, for a NaN or infinite position. Inside an XLA-compiled function
            (`jit_compile=True`), where TensorFlow drops run-time checks, the patch of
            such a position is all NaN instead, for every interpolation, and so are its
            gradients: never a valid-looking patch.
    """
    N = check_size(N)
    interpolation = check_interpolation(interpolation)
    obj = as_object(obj)
    grouped, channel = as_positions(positions, obj.dtype)
    obj_index = per_sample_index(obj, grouped)
    if grouped.shape[0] is not None:
        patches = grouped.shape[0] * grouped.shape[1]
        # Eagerly, the kernels run one chunk at a time; in a graph, on every patch at once.
        buffered = None
        if tf.executing_eagerly():
            buffered = chunk_groups((N, N), grouped.shape[1], 1, obj.dtype) * grouped.shape[1]
        nbytes = request_bytes(
            obj.shape[1:3], obj.shape[0] or 1, patches, N, interpolation, obj.dtype, buffered
        )
        check_memory(nbytes * obj.dtype.size, "the patches")
    half = -(N // 2)
    win = windows(obj, grouped, obj_index, (N, N), (half, half), interpolation, "gather")
    if channel:
        return win[..., 0]  # (B, N, N, c)
    return win[:, :, :, 0, :]  # (P, N, N, 1)


def request_bytes(
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
    fh, fw = _kernel.footprint((N, N), interpolation)
    table = (object_shape[0] + 2 * fh) * (object_shape[1] + 2 * fw) * objects
    elements = patches * N * N + table
    if interpolation == "fourier":
        dtype = tf.as_dtype(dtype)
        fft_bytes = 16 if dtype in (tf.float64, tf.complex128) else 8
        in_flight = patches if buffered is None else min(buffered, patches)
        elements += -(-2 * in_flight * fh * fw * fft_bytes // dtype.size)
    return elements


def per_sample_index(obj: tf.Tensor, grouped: tf.Tensor):
    """`None` for a shared object, else the object index of every group.

    When the object count is only known at run time (inside a graph), a count of one
    means a shared object, and any other count must equal the number of groups.
    """
    count = obj.shape[0]
    if count == 1:
        return None
    groups = grouped.shape[0]
    if count is not None and groups is not None and count != groups:
        raise ValueError(
            "With one object per sample, `obj` and `positions` must have the same batch size. "
            f"Received: obj.shape={obj.shape} and {groups} position groups"
        )
    index = tf.range(tf.shape(grouped)[0])
    if count is not None and groups is not None:
        return index
    count, groups = tf.shape(obj)[0], tf.shape(grouped)[0]
    check = tf.debugging.Assert(
        tf.logical_or(tf.equal(count, 1), tf.equal(count, groups)),
        [
            "With one object per sample, `obj` and `positions` must have the same batch size. "
            "Received: obj batch and position groups",
            count,
            groups,
        ],
    )
    with tf.control_dependencies([check]):
        return index * tf.cast(count > 1, index.dtype)


def windows(obj, grouped, obj_index, size, shift, interpolation, kernel="gather") -> tf.Tensor:
    """Differentiable windows `(G, Nh, Nw, c, C)` of validated inputs.

    `kernel` picks the forward kernel: `"gather"` copies each footprint as a block (fast
    for small windows of a large object), `"sample"` gathers every sample (a margin of
    one pixel; right for windows as large as the object, as in `translate`).
    """
    static = {
        "size": size,
        "shift": shift,
        "interpolation": interpolation,
        "complex_out": obj.dtype.is_complex,
    }
    if tf.config.functions_run_eagerly():
        kernel = "sample"  # the block gather exists only inside XLA

    @tf.custom_gradient
    def forward(obj, grouped):
        if kernel == "gather":
            margin = _kernel.footprint(size, interpolation)
            run = _kernel.gather_windows
        else:
            margin = (1, 1)
            run = _sample_windows_xla
        # The kernels are not differentiated: `grad` below supplies the gradient.
        bucketed = kernel == "gather" and tf.executing_eagerly()
        if bucketed:  # a few table shapes, hence a few compiled programs (see `_bucketed`)
            table = _bucketed_table(tf.stop_gradient(obj), margin)
        else:
            table = _kernel.prepare_table(tf.stop_gradient(obj), margin)
        positions = tf.stop_gradient(grouped)
        if tf.executing_eagerly():
            out = _chunked(run, table, positions, obj_index, static, obj.dtype)
        else:
            out = run(table, positions, obj_index, **static)

        def grad(d_out):
            if kernel == "gather" and interpolation != "fourier":

                def vjp(pos, idx, d):
                    return _kernel.gather_windows_vjp(table, pos, idx, d, **static, margin=margin)
            else:

                def vjp(pos, idx, d):
                    source = _bucketed(obj, (0, 0)) if bucketed else obj
                    return _windows_vjp(source, pos, idx, d, **static)

            if not tf.executing_eagerly():
                d_obj, d_pos = vjp(grouped, obj_index, d_out)
                # A non-finite position (reachable only under XLA, where the check in
                # `as_positions` vanishes) gets a NaN gradient, never a plausible one.
                finite = tf.reduce_all(tf.math.is_finite(grouped), axis=-1, keepdims=True)
                return d_obj, tf.where(finite, d_pos, tf.constant(np.nan, d_pos.dtype))
            # Pad the count as the forward pass does, so that new counts reuse programs;
            # the padded rows carry zero output gradient and contribute nothing.
            count = grouped.shape[0]
            extra = _padded_count(count, _step(obj, grouped, static)) - count
            pos, idx, d_pad = grouped, obj_index, d_out
            if extra:
                pos = tf.pad(grouped, [[0, extra], [0, 0], [0, 0]])
                idx = None if obj_index is None else tf.pad(obj_index, [[0, extra]])
                d_pad = tf.pad(d_out, [[0, extra]] + [[0, 0]] * (d_out.shape.rank - 1))
            d_obj, d_pos = vjp(pos, idx, d_pad)
            bo, height, width, _ = obj.shape  # the bucketed table's padding is no object
            return d_obj[:bo, :height, :width], d_pos[:count]

        return out, grad

    return forward(obj, grouped)


# Every new table shape would compile new XLA programs, which TensorFlow keeps for the
# life of the process (its compilation cache has no eviction): 1 to 4 MiB each. Eagerly,
# object tables are therefore zero-padded at the bottom and right to a power of two in
# each direction (at least 8), and batches of per-sample objects are padded with empty
# objects to a power of two. Windows read the same zeros there as outside the object, so
# results are unchanged. Padding that would cost more than `BUCKET_SLACK` bytes is
# skipped: an object that large makes one program more a small price.
BUCKET_SLACK = 64 * 2**20


def _bucket_extent(n: int) -> int:
    """`n` rounded up to a power of two, at least 8."""
    return max(8, 1 << (n - 1).bit_length())


def _bucket_shape(shape, margin, itemsize: int) -> list[int]:
    """The bucketed `(Bo, H, W)` of a `(Bo, H, W, C)` object, its table margined by `margin`."""
    count, height, width, channels = shape
    bucketed = [count if count == 1 else _bucket_extent(count)]
    bucketed += [_bucket_extent(height), _bucket_extent(width)]
    my, mx = margin

    def table_bytes(count, height, width):
        return count * (height + 2 * my) * (width + 2 * mx) * channels * itemsize

    if table_bytes(*bucketed) - table_bytes(count, height, width) > BUCKET_SLACK:
        return [count, height, width]
    return bucketed


def _bucketed(obj: tf.Tensor, margin) -> tf.Tensor:
    """`(Bo, H, W, C)` zero-padded by `margin` and up to its bucketed shape."""
    count, height, width, _ = obj.shape
    shape = _bucket_shape(obj.shape, margin, obj.dtype.size)
    my, mx = margin
    pads = [[0, shape[0] - count], [my, my + shape[1] - height], [mx, mx + shape[2] - width]]
    return tf.pad(obj, [*pads, [0, 0]])


def _bucketed_table(obj: tf.Tensor, margin) -> tf.Tensor:
    """The table of :func:`_kernel.prepare_table`, eagerly, in a bucketed shape.

    Built by one padding and a reinterpretation of complex numbers as `(re, im)` pairs,
    neither compiled, so a new object shape compiles nothing here.
    """
    table = _bucketed(obj, margin)
    if obj.dtype.is_complex:
        pairs = tf.bitcast(table, obj.dtype.real_dtype)  # (..., C, 2), no copy
        table = tf.reshape(pairs, [*table.shape[:3], 2 * table.shape[3]])
    return table


@tf.function(jit_compile=True, autograph=False)
def _sample_windows_xla(table, grouped, obj_index, **static):
    return _kernel.sample_windows(table, grouped, obj_index, **static)


@tf.function(jit_compile=True, autograph=False)
def _windows_vjp(obj, grouped, obj_index, d_out, **static):
    with tf.GradientTape() as tape:
        tape.watch([obj, grouped])
        # The plain Python function: differentiating a call of the nested XLA function
        # made XLA compile the object in as a constant, recompiling for every new object.
        table = _kernel.prepare_table.python_function(obj, (1, 1))
        out = _kernel.sample_windows(table, grouped, obj_index, **static)
    d_obj, d_pos = tape.gradient(out, [obj, grouped], output_gradients=d_out)
    if d_pos is None:  # nearest interpolation is piecewise constant in the positions
        d_pos = tf.zeros_like(grouped)
    return d_obj, d_pos


def chunk_groups(size, c: int, channels: int, dtype: tf.DType) -> int:
    """Groups per eager chunk: about `CHUNK_BYTES` of output, a power of two.

    Groups without patches (`c = 0`) are counted as if they held one.
    """
    group_bytes = size[0] * size[1] * max(c, 1) * max(channels, 1) * dtype.size
    groups = max(1, CHUNK_BYTES // group_bytes)
    return 1 << (groups.bit_length() - 1)


def _bucket(count: int) -> int:
    return 1 << max(0, count - 1).bit_length()


def _padded_count(count: int, step: int) -> int:
    """Counts up to a chunk round up to a power of two, larger ones to whole chunks."""
    return min(_bucket(count), step) if count <= step else -(-count // step) * step


def _step(obj, grouped, static) -> int:
    channels = obj.shape[-1]
    return chunk_groups(static["size"], grouped.shape[1], channels, obj.dtype)


def _chunked(run, table, grouped, obj_index, static, dtype) -> tf.Tensor:
    """Run an XLA kernel eagerly over fixed-size chunks of the groups.

    A request of up to one chunk is padded to a power of two; a larger one runs in whole
    chunks, its tail padded to a full chunk. XLA therefore compiles a handful of programs
    per object shape, not one per number of positions. The chunks are written into one
    preallocated, 64-byte aligned output buffer that is handed to TensorFlow without a
    copy.
    """
    groups, c, _ = grouped.shape
    size = static["size"]
    channels = table.shape[-1] // (2 if static["complex_out"] else 1)
    step = chunk_groups(size, c, channels, dtype)

    def call(start, stop):
        count = stop - start
        padded = _padded_count(count, step) if groups <= step else step
        pos = grouped[start:stop]
        idx = None if obj_index is None else obj_index[start:stop]
        if padded != count:
            pos = tf.pad(pos, [[0, padded - count], [0, 0], [0, 0]])
            idx = None if idx is None else tf.pad(idx, [[0, padded - count]])
        out = run(table, pos, idx, **static)
        return out if padded == count else out[:count]

    if groups <= step:
        return call(0, groups)
    np_dtype = dtype.as_numpy_dtype
    on_cpu = ":CPU:" in table.device.upper()
    if not on_cpu or np.dtype(np_dtype).kind not in "fc":  # accelerators, bfloat16
        return tf.concat([call(s, min(s + step, groups)) for s in range(0, groups, step)], 0)
    out = _aligned_empty((groups, *size, c, channels), np_dtype)

    def store(start, stop, chunk):
        out[start:stop] = np.from_dlpack(_dlpack_view(chunk))  # no copy out; drops the GIL

    # Each chunk is copied into place on a helper thread while XLA computes the next one.
    pending = None
    for start in range(0, groups, step):
        stop = min(start + step, groups)
        chunk = call(start, stop)
        if pending is not None:
            pending.result()
        pending = _copier().submit(store, start, stop, chunk)
    pending.result()
    return tf.experimental.dlpack.from_dlpack(out.__dlpack__())


def _dlpack_view(tensor: tf.Tensor):
    """`tensor` as an object NumPy can view through DLPack, on every supported TensorFlow.

    TensorFlow 2.20 and later give eager tensors `__dlpack__`; older ones only have
    `tf.experimental.dlpack.to_dlpack`, whose capsule is wrapped here. Both hand NumPy the
    tensor's own buffer; `tensor.numpy()` would copy it (3.0 against 9.9 ms per 32 MiB on
    the reference machine).
    """
    if hasattr(tensor, "__dlpack__"):
        return tensor
    return _Capsule(tensor)


class _Capsule:
    """The DLPack protocol over `tf.experimental.dlpack.to_dlpack`, for a CPU tensor."""

    def __init__(self, tensor: tf.Tensor):
        self._tensor = tensor

    def __dlpack__(self, *, stream=None, **kwargs):
        return tf.experimental.dlpack.to_dlpack(self._tensor)

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0: `_chunked` takes this path only on the CPU


@functools.cache
def _copier() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ptycho-copy")


# A forked child inherits the executor without its thread: start a new one there.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_copier.cache_clear)


def _aligned_empty(shape, dtype, alignment: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an `alignment`-byte boundary.

    TensorFlow's kernels require 64-byte aligned buffers; an array handed to TensorFlow
    through DLPack must therefore be allocated with that alignment.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + nbytes].view(dtype).reshape(shape)


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
    average neighbouring pixels).

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
        respect to the patches.
    """
    interpolation = check_interpolation(interpolation)
    height, width = check_object_shape(object_shape)
    min_weight = check_min_weight(min_weight)
    patches = to_tensor(patches, "patches")
    if patches.dtype not in OBJECT_DTYPES:
        raise TypeError(
            "`patches` must be complex64, complex128 or a float dtype. "
            f"Received: patches.dtype={patches.dtype.name}"
        )
    shape = patches.shape
    if shape.rank != 4 or shape[1] is None or shape[1] != shape[2]:
        raise ValueError(
            f"`patches` must have shape (B, N, N, c) or (P, N, N, 1). Received: {shape}"
        )
    dtype = patches.dtype
    if dtype in (tf.float16, tf.bfloat16):
        patches = tf.cast(patches, tf.float32)  # accumulate in float32
    grouped, channel = as_positions(positions, patches.dtype)
    expected = (grouped.shape[0], grouped.shape[1]) if channel else (grouped.shape[0], 1)
    found = (shape[0], shape[3])
    pairs = zip(found, expected, strict=True)
    if any(f is not None and e is not None and f != e for f, e in pairs):
        raise ValueError(
            "`patches` and `positions` do not match: expected patches of shape "
            f"{(expected[0], shape[1], shape[2], expected[1])}. Received: patches.shape={shape} "
            f"and positions.shape={to_tensor(positions, 'positions').shape}"
        )
    # The layout of the windows kernels, `(G, N, N, c, 1)`.
    d_out = patches[..., None] if channel else patches[:, :, :, None, :]
    N = shape[1]
    check_memory(3 * height * width * 2 * dtype.real_dtype.size, "the canvas")
    size, shift = (N, N), (-(N // 2), -(N // 2))
    grouped = tf.stop_gradient(grouped)

    one = tf.ones([], d_out.dtype.real_dtype)

    # Overlapping patches near the float maximum can overflow the sum (and Fourier's
    # transform) though the normalised canvas is finite. Only then is the sum redone with
    # the patches scaled by a power of two that brings their peak near 1, exactly, and
    # the canvas scaled back by `up` after normalising. The gradient is that of the plain
    # sum, one program for both cases: differentiating each branch of the choice would
    # compile two, which may round differently.
    @tf.custom_gradient
    def overlap_add(d_out):
        d_out = tf.stop_gradient(d_out)  # graph mode would differentiate the choice too

        def summed(scale=None):
            return _overlap_add(d_out, grouped, (height, width), size, shift, interpolation, scale)

        def rescaled():
            down, up = _kernel.power_of_two_scales(_peak(d_out))
            return summed(down), up

        canvas = summed()
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(p)) for p in _real_parts(canvas)])
        if not tf.executing_eagerly():
            canvas, up = tf.cond(finite, lambda: (canvas, one), rescaled)
        else:
            canvas, up = (canvas, one) if bool(finite) else rescaled()

        def grad(d_canvas, d_up):  # the adjoint of the adjoint: extraction
            del d_up  # `up` is a constant of the scaling
            return windows(d_canvas[None, :, :, None], grouped, None, size, shift, interpolation)

        return (canvas, up), grad

    canvas, up = overlap_add(d_out)
    if normalize:
        # Fourier's adjoint rings over the whole margin, so its coverage and weights would
        # reach pixels no patch read: the weights are the bilinear ones.
        spread = "bilinear" if interpolation == "fourier" else interpolation
        ones = tf.ones(tf.shape(d_out), d_out.dtype.real_dtype)
        weight = _overlap_add(ones, grouped, (height, width), size, shift, spread)
        covered = (weight >= min_weight) & (weight > 0)
        safe = tf.where(covered, weight, tf.ones_like(weight))
        canvas = tf.where(covered, canvas / tf.cast(safe, canvas.dtype), tf.zeros_like(canvas))
    canvas = _kernel.rescale(canvas, up)  # exact: 1 unless the sum was rescaled
    return tf.cast(canvas, dtype)


def _peak(values: tf.Tensor) -> tf.Tensor:
    """Largest magnitude of the real numbers in `values` (both parts of complex ones).

    Computed without a modulus, which could overflow, and eagerly without a full-size
    temporary: complex values are viewed as real pairs (XLA, which fuses the reductions,
    has no complex bitcast).
    """
    if values.dtype.is_complex and tf.executing_eagerly():
        values = tf.bitcast(values, values.dtype.real_dtype)  # (..., 2): a view, no copy
    return tf.reduce_max(
        [tf.maximum(tf.reduce_max(p), -tf.reduce_min(p)) for p in _real_parts(values)]
    )


def _real_parts(values: tf.Tensor) -> list[tf.Tensor]:
    """`[values]`, or the real and imaginary parts of complex `values`."""
    return [tf.math.real(values), tf.math.imag(values)] if values.dtype.is_complex else [values]


def check_min_weight(min_weight) -> float:
    """Validate `min_weight` of :func:`reassemble_patches`: a finite real number >= 0."""
    if isinstance(min_weight, bool) or not isinstance(min_weight, numbers.Real):
        raise TypeError(
            f"`min_weight` must be a finite number >= 0. Received: min_weight={min_weight!r}"
        )
    if not (np.isfinite(min_weight) and min_weight >= 0):
        raise ValueError(
            f"`min_weight` must be a finite number >= 0. Received: min_weight={min_weight!r}"
        )
    return float(min_weight)


def check_object_shape(object_shape) -> tuple[int, int]:
    try:
        height, width = object_shape
    except (TypeError, ValueError):
        raise ValueError(
            f"`object_shape` must be (height, width). Received: object_shape={object_shape!r}"
        ) from None
    return check_size(height, "height"), check_size(width, "width")


def _overlap_add(d_out, grouped, object_shape, size, shift, interpolation, scale=None) -> tf.Tensor:
    """Sum of the adjoint of every window `(G, Nh, Nw, c, 1)` on a `(H, W)` canvas.

    Eagerly, the windows go through in chunks of a fixed size, so memory stays bounded
    for any number of patches and new counts reuse the compiled programs. A `scale`
    multiplies the windows first, chunk by chunk.
    """
    static = {
        "size": size,
        "shift": shift,
        "interpolation": interpolation,
        "complex_out": d_out.dtype.is_complex,
    }
    real_dtype = d_out.dtype.real_dtype if d_out.dtype.is_complex else d_out.dtype
    height, width = object_shape
    if tf.executing_eagerly():  # a few canvas shapes, hence a few programs (see `_bucketed`)
        object_shape = _bucket_shape((1, height, width, 1), (0, 0), d_out.dtype.size)[1:]
    obj_spec = tf.zeros([1, *object_shape, 1], d_out.dtype)
    if interpolation == "fourier":

        def adjoint(pos, d):
            return _windows_vjp(obj_spec, pos, None, d, **static)[0]
    else:
        margin = _kernel.footprint(size, interpolation)
        table_shape = [1, object_shape[0] + 2 * margin[0], object_shape[1] + 2 * margin[1]]
        table = tf.zeros([*table_shape, 2 if d_out.dtype.is_complex else 1], real_dtype)

        def adjoint(pos, d):
            return _kernel.gather_windows_vjp(
                table, pos, None, d, **static, margin=margin, with_positions=False
            )[0]

    if scale is not None:
        scale = tf.cast(scale, d_out.dtype)
    if not tf.executing_eagerly():
        return adjoint(grouped, d_out if scale is None else d_out * scale)[0, :, :, 0]
    groups = grouped.shape[0]
    step = chunk_groups(size, grouped.shape[1], 1, d_out.dtype)
    canvas = None
    for start in range(0, groups, step):
        stop = min(start + step, groups)
        padded = _padded_count(groups, step) if groups <= step else step
        pos, d = grouped[start:stop], d_out[start:stop]
        if scale is not None:
            d *= scale
        if padded != stop - start:
            extra = padded - (stop - start)
            pos = tf.pad(pos, [[0, extra], [0, 0], [0, 0]])
            d = tf.pad(d, [[0, extra], [0, 0], [0, 0], [0, 0], [0, 0]])
        part = adjoint(pos, d)
        canvas = part if canvas is None else canvas + part
    if canvas is None:
        return tf.zeros([height, width], d_out.dtype)
    return canvas[0, :height, :width, 0]
