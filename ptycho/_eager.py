"""Eager execution of the XLA kernels: fixed-size chunks, bucketed shapes.

Called eagerly, a compiled kernel would compile anew for every number of positions and
every object shape. Here eager calls are padded to whole chunks of a few fixed sizes and
run as programs of a power of two of chunks (see :func:`run_chunked`), and object tables
are padded to a few bucketed shapes. Inside a `tf.function` none of this applies: the
kernel runs on the whole batch.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import os

import numpy as np
import tensorflow as tf

from ptycho import _kernel

__all__ = [
    "BUCKET_SLACK",
    "CHUNK_BYTES",
    "PIECE_BYTES",
    "Capsule",
    "bucket_shape",
    "bucketed",
    "bucketed_table",
    "chunk_groups",
    "dlpack_view",
    "padded_count",
    "pieces",
    "run_chunked",
    "sum_chunked",
    "writable_view",
]

# Eager calls are padded to whole chunks of about this many output bytes, so that a new
# number of positions does not trigger a new XLA compilation. 16 MiB measured best on the
# 2-core reference machine for chunk-by-chunk runs: smaller chunks pay XLA's per-call cost
# (about 0.7 ms) too often, larger ones fall out of the 32 MiB L3 cache before they are
# copied into place.
CHUNK_BYTES = 16 * 2**20


def chunk_groups(size, c: int, channels: int, dtype: tf.DType) -> int:
    """Groups per eager chunk: about `CHUNK_BYTES` of output, a power of two.

    Groups without patches (`c = 0`) are counted as if they held one.
    """
    group_bytes = size[0] * size[1] * max(c, 1) * max(channels, 1) * dtype.size
    groups = max(1, CHUNK_BYTES // group_bytes)
    return 1 << (groups.bit_length() - 1)


def bucket_count(count: int) -> int:
    return 1 << max(0, count - 1).bit_length()


def padded_count(count: int, step: int) -> int:
    """Counts up to a chunk round up to a power of two, larger ones to whole chunks."""
    return min(bucket_count(count), step) if count <= step else -(-count // step) * step


def step_groups(obj, grouped, static) -> int:
    channels = obj.shape[-1]
    return chunk_groups(static["size"], grouped.shape[1], channels, obj.dtype)


# A call on more than one chunk runs as one program when its chunk count is a power of
# two (the output is then the program's own, with no copy), and otherwise in pieces of a
# power of two of chunks, each of at most this many bytes of output (and at least one
# chunk), copied into place: at most two pieces are held beside the output.
PIECE_BYTES = 4 * CHUNK_BYTES


def pieces(chunks: int, whole: bool = True, most: int = PIECE_BYTES // CHUNK_BYTES) -> list[int]:
    """The chunk counts of the programs that run `chunks` whole chunks, largest first.

    With `whole`, a power of two runs as one program: the fused block-gather kernel needs
    no memory beyond its output, so this holds only the output and at most one chunk of
    padding (which the returned slice keeps). Any other count is split into powers of two
    of at most `most` chunks, so that the pieces in flight beside the output stay small.
    Each object shape thus compiles a few programs, one per power of two. Without
    `whole` (kernels that hold temporaries per patch in flight: `"fourier"`'s transform
    buffers, about four times its output, or the per-sample gather), every chunk runs on
    its own.
    """
    if not whole:
        return [1] * chunks
    if chunks & (chunks - 1) == 0:
        return [chunks]
    most = 1 << (max(1, most).bit_length() - 1)  # a power of two
    out = [most] * (chunks // most)
    rest = chunks % most
    out += [1 << k for k in reversed(range(rest.bit_length())) if rest >> k & 1]
    return out


def run_chunked(run, table, grouped, obj_index, static, dtype) -> tf.Tensor:
    """Run an XLA kernel eagerly over fixed-size chunks of the groups.

    A request of up to one chunk is padded to a power of two; a larger one is padded to
    whole chunks and runs in the :func:`pieces` of a power of two of chunks. XLA therefore
    compiles a handful of programs per object shape, not one per number of positions. A
    single piece's output is returned as it is (a slice of it, without a copy); several
    pieces are copied into one output tensor (see :func:`writable_view`).
    """
    groups, c, _ = grouped.shape
    size = static["size"]
    channels = table.shape[-1] // (2 if static["complex_out"] else 1)
    step = chunk_groups(size, c, channels, dtype)

    if groups <= step:
        padded = padded_count(groups, step)
        pos, idx = grouped, obj_index
        if padded != groups:
            pos = tf.pad(pos, [[0, padded - groups], [0, 0], [0, 0]])
            idx = None if idx is None else tf.pad(idx, [[0, padded - groups]])
        out = run(table, pos, idx, **static)
        return out if padded == groups else out[:groups]
    # The positions are padded and split once, and the kernel is called as a concrete
    # function, which saves the per-call argument matching of `tf.function` and the
    # slicing of eager tensors.
    chunks = -(-groups // step)
    extra = chunks * step - groups
    whole = run is _kernel.gather_windows and static["interpolation"] != "fourier"
    chunk_bytes = step * max(c, 1) * size[0] * size[1] * max(channels, 1) * dtype.size
    sizes = [n * step for n in pieces(chunks, whole, PIECE_BYTES // chunk_bytes)]
    positions = tf.split(tf.pad(grouped, [[0, extra], [0, 0], [0, 0]]), sizes)
    indices = [None] * len(sizes)
    if obj_index is not None:
        indices = tf.split(tf.pad(obj_index, [[0, extra]]), sizes)
    kernels = {}

    def kernel(pos, idx):
        if tf.config.functions_run_eagerly():  # honoured by calls, not concrete functions
            return run(table, pos, idx, **static)
        n = pos.shape[0]
        if n not in kernels:
            kernels[n] = run.get_concrete_function(table, pos, idx, **static)
        # Called with the traced signature: other arguments fail its binding first, and
        # the error message it then builds prints every tensor.
        return kernels[n](table, pos, idx, **static)

    if len(sizes) == 1:
        return kernel(positions[0], indices[0])[:groups]  # a slice along axis 0: no copy
    outputs = (kernel(p, i) for p, i in zip(positions, indices, strict=True))
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    np_dtype = dtype.as_numpy_dtype
    on_cpu = ":CPU:" in table.device.upper()
    if not on_cpu or np.dtype(np_dtype).kind not in "fc":  # accelerators, bfloat16
        return tf.concat(list(outputs), 0)[:groups]
    with tf.device(table.device):
        result = tf.raw_ops.Empty(shape=(groups, *size, c, channels), dtype=dtype, init=False)
    out = writable_view(result)

    def store(start, piece, owner=result):  # `owner` keeps the buffer alive while written
        stop = min(start + piece.shape[0], groups)
        out[start:stop] = np.from_dlpack(dlpack_view(piece))[: stop - start]  # drops the GIL

    # Each piece is copied into place on a helper thread while XLA computes the next one.
    # Whatever happens here (an error, an interrupt), no copy outlives this function.
    pending = None
    try:
        for start, piece in zip(starts, outputs, strict=True):
            if pending is not None:
                pending.result()
            pending = _copier().submit(store, start, piece)
            del piece
    finally:
        if pending is not None:
            concurrent.futures.wait([pending])
    pending.result()
    return result


def writable_view(tensor: tf.Tensor) -> np.ndarray:
    """A writable NumPy view of a CPU `tensor` that nothing else has seen yet.

    `run_chunked` assembles its output in a tensor from TensorFlow's own allocator
    (`tf.raw_ops.Empty`), not in a NumPy array handed over by DLPack: TensorFlow reuses
    the memory of freed tensors, so a call after the previous output is dropped writes to
    pages already mapped, as the XLA kernels' own outputs do, where a fresh NumPy array
    pays a page fault every 4 KiB (12 ms per 128 MiB on the reference machine, more than
    the kernel). DLPack views are read-only, so the view is built from the buffer's
    address; it does not keep `tensor` alive, so the caller holds `tensor` while writing
    (`run_chunked` waits for every copy before it returns or raises).
    """
    shared = np.from_dlpack(dlpack_view(tensor))
    if shared.nbytes == 0:
        return np.empty(shared.shape, shared.dtype)  # nothing to write
    buffer = (ctypes.c_char * shared.nbytes).from_address(shared.ctypes.data)
    return np.frombuffer(buffer, shared.dtype).reshape(shared.shape)


def dlpack_view(tensor: tf.Tensor):
    """`tensor` as an object NumPy can view through DLPack, on every supported TensorFlow.

    TensorFlow 2.20 and later give eager tensors `__dlpack__`; older ones only have
    `tf.experimental.dlpack.to_dlpack`, whose capsule is wrapped here. Both hand NumPy the
    tensor's own buffer; `tensor.numpy()` would copy it (3.0 against 9.9 ms per 32 MiB on
    the reference machine).
    """
    if hasattr(tensor, "__dlpack__"):
        return tensor
    return Capsule(tensor)


class Capsule:
    """The DLPack protocol over `tf.experimental.dlpack.to_dlpack`, for a CPU tensor."""

    def __init__(self, tensor: tf.Tensor):
        self._tensor = tensor

    def __dlpack__(self, *, stream=None, **kwargs):
        return tf.experimental.dlpack.to_dlpack(self._tensor)

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0: `run_chunked` takes this path only on the CPU


@functools.cache
def _copier() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ptycho-copy")


# A forked child inherits the executor without its thread: start a new one there.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_copier.cache_clear)


# Every new table shape would compile new XLA programs, which TensorFlow keeps for the
# life of the process (its compilation cache has no eviction): 1 to 4 MiB each. Eagerly,
# object tables are therefore zero-padded at the bottom and right to a power of two in
# each direction (at least 8), and batches of per-sample objects are padded with empty
# objects to a power of two. Windows read the same zeros there as outside the object, so
# results are unchanged. Padding that would cost more than `BUCKET_SLACK` bytes is
# skipped: an object that large makes one program more a small price.
BUCKET_SLACK = 64 * 2**20


def bucket_extent(n: int) -> int:
    """`n` rounded up to a power of two, at least 8."""
    return max(8, 1 << (n - 1).bit_length())


def bucket_shape(shape, margin, itemsize: int) -> list[int]:
    """The bucketed `(Bo, H, W)` of a `(Bo, H, W, C)` object, its table margined by `margin`."""
    count, height, width, channels = shape
    bucketed = [count if count == 1 else bucket_extent(count)]
    bucketed += [bucket_extent(height), bucket_extent(width)]
    my, mx = margin

    def table_bytes(count, height, width):
        return count * (height + 2 * my) * (width + 2 * mx) * channels * itemsize

    if table_bytes(*bucketed) - table_bytes(count, height, width) > BUCKET_SLACK:
        return [count, height, width]
    return bucketed


def bucketed(obj: tf.Tensor, margin) -> tf.Tensor:
    """`(Bo, H, W, C)` zero-padded by `margin` and up to its bucketed shape."""
    count, height, width, _ = obj.shape
    shape = bucket_shape(obj.shape, margin, obj.dtype.size)
    my, mx = margin
    pads = [[0, shape[0] - count], [my, my + shape[1] - height], [mx, mx + shape[2] - width]]
    return tf.pad(obj, [*pads, [0, 0]])


def bucketed_table(obj: tf.Tensor, margin) -> tf.Tensor:
    """The table of :func:`_kernel.prepare_table`, eagerly, in a bucketed shape.

    Built by one padding and a reinterpretation of complex numbers as `(re, im)` pairs,
    neither compiled, so a new object shape compiles nothing here.
    """
    table = bucketed(obj, margin)
    if obj.dtype.is_complex:
        pairs = tf.bitcast(table, obj.dtype.real_dtype)  # (..., C, 2), no copy
        table = tf.reshape(pairs, [*table.shape[:3], 2 * table.shape[3]])
    return table


def sum_chunked(adjoint, grouped, d_out, size, scale=None) -> tf.Tensor:
    """`sum(adjoint(pos, d))` over fixed-size chunks of `(G, c, 2)` positions and their
    `(G, Nh, Nw, c, C)` window gradients, each chunk padded like :func:`run_chunked`'s.

    Memory stays bounded for any number of patches and new counts reuse the compiled
    programs. A `scale` multiplies the gradients first, chunk by chunk. Returns `None`
    for no groups.
    """
    groups = grouped.shape[0]
    step = chunk_groups(size, grouped.shape[1], 1, d_out.dtype)
    total = None
    for start in range(0, groups, step):
        stop = min(start + step, groups)
        padded = padded_count(groups, step) if groups <= step else step
        pos, d = grouped[start:stop], d_out[start:stop]
        if scale is not None:
            d *= scale
        if padded != stop - start:
            extra = padded - (stop - start)
            pos = tf.pad(pos, [[0, extra], [0, 0], [0, 0]])
            d = tf.pad(d, [[0, extra], [0, 0], [0, 0], [0, 0], [0, 0]])
        part = adjoint(pos, d)
        total = part if total is None else total + part
    return total
