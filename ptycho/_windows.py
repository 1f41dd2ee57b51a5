"""The differentiable window operations behind the public functions.

:func:`windows` reads the windows of validated positions from an object with the XLA
kernels of :mod:`ptycho._kernel`, whole inside a graph and in chunks eagerly
(:mod:`ptycho._eager`), and gives them their exact gradient for the object and the
positions. :func:`overlap_add` is its adjoint in the patches (reassembly), safe from
overflow where the true sum is finite.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ptycho import _eager, _kernel

__all__ = ["overlap_add", "windows", "windows_vjp"]


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
        # The block gather exists only inside XLA, and `tf.config.run_functions_eagerly`
        # runs every `jit_compile=True` function as plain Python: this global flag is the
        # one public way to know that the kernel will not be compiled.
        kernel = "sample"

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
        if bucketed:  # a few table shapes, hence a few compiled programs (see `_eager.bucketed`)
            table = _eager.bucketed_table(tf.stop_gradient(obj), margin)
        else:
            table = _kernel.prepare_table(tf.stop_gradient(obj), margin)
        positions = tf.stop_gradient(grouped)
        if tf.executing_eagerly():
            out = _eager.run_chunked(run, table, positions, obj_index, static, obj.dtype)
        else:
            out = _separately(run, table, positions, obj_index, static, obj.shape[-1])

        def grad(d_out):
            if kernel == "gather" and interpolation != "fourier":

                def vjp(pos, idx, d):
                    return _kernel.gather_windows_vjp(table, pos, idx, d, **static, margin=margin)
            else:

                def vjp(pos, idx, d):
                    source = _eager.bucketed(obj, (0, 0)) if bucketed else obj
                    return windows_vjp(source, pos, idx, d, **static)

            if not tf.executing_eagerly():
                d_obj, d_pos = vjp(grouped, obj_index, d_out)
                # A non-finite position (reachable only under XLA, where the check in
                # `as_positions` vanishes) gets a NaN gradient, never a plausible one.
                finite = tf.reduce_all(tf.math.is_finite(grouped), axis=-1, keepdims=True)
                return d_obj, tf.where(finite, d_pos, tf.constant(np.nan, d_pos.dtype))
            # Pad the count as the forward pass does, so that new counts reuse programs;
            # the padded rows carry zero output gradient and contribute nothing.
            count = grouped.shape[0]
            extra = _eager.padded_count(count, _eager.step_groups(obj, grouped, static)) - count
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


def _separately(run, table, grouped, obj_index, static, channels):
    """The kernel's windows inside a graph, computed once (see :func:`_kernel.separately`)."""
    c = grouped.shape[1]

    def compute():
        out = run(table, grouped, obj_index, **static)
        # Returned as `(G, Nh, Nw, c * C)`: with a trailing axis of one channel, XLA would
        # give the conditional's output a layout of its own, and copy it.
        return tf.reshape(out, tf.concat([tf.shape(out)[:3], [c * channels]], axis=0))

    out = _kernel.separately(grouped, compute)
    return tf.reshape(out, tf.concat([tf.shape(out)[:3], [c, channels]], axis=0))


@tf.function(jit_compile=True, autograph=False)
def _sample_windows_xla(table, grouped, obj_index, **static):
    return _kernel.sample_windows(table, grouped, obj_index, **static)


@tf.function(jit_compile=True, autograph=False)
def windows_vjp(obj, grouped, obj_index, d_out, **static):
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


def _sum_adjoints(
    d_out, grouped, object_shape, size, shift, interpolation, scale=None
) -> tf.Tensor:
    """Sum of the adjoint of every window `(G, Nh, Nw, c, 1)` on a `(H, W)` canvas.

    Eagerly, the windows go through in chunks (:func:`_eager.sum_chunked`). A `scale`
    multiplies the windows first.
    """
    static = {
        "size": size,
        "shift": shift,
        "interpolation": interpolation,
        "complex_out": d_out.dtype.is_complex,
    }
    real_dtype = d_out.dtype.real_dtype if d_out.dtype.is_complex else d_out.dtype
    height, width = object_shape
    if tf.executing_eagerly():  # a few canvas shapes, hence a few programs (see `_eager.bucketed`)
        object_shape = _eager.bucket_shape((1, height, width, 1), (0, 0), d_out.dtype.size)[1:]
    obj_spec = tf.zeros([1, *object_shape, 1], d_out.dtype)
    if interpolation == "fourier":

        def adjoint(pos, d):
            return windows_vjp(obj_spec, pos, None, d, **static)[0]
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
    canvas = _eager.sum_chunked(adjoint, grouped, d_out, size, scale)
    if canvas is None:
        return tf.zeros([height, width], d_out.dtype)
    return canvas[0, :height, :width, 0]


def overlap_add(d_out, grouped, object_shape, N, interpolation, normalize, min_weight):
    """The reassembled `(H, W)` canvas of validated `(G, N, N, c, 1)` patches.

    The sum of every patch's adjoint, divided by the summed interpolation weights when
    `normalize` (pixels of weight below `min_weight` or zero set to zero), and
    differentiable with respect to the patches: the gradient is extraction.
    """
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
    def summed(d_out):
        d_out = tf.stop_gradient(d_out)  # graph mode would differentiate the choice too

        def plain(scale=None):
            return _sum_adjoints(d_out, grouped, object_shape, size, shift, interpolation, scale)

        def rescaled():
            down, up = _kernel.power_of_two_scales(_peak(d_out))
            return plain(down), up

        canvas = plain()
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(p)) for p in _real_parts(canvas)])
        if not tf.executing_eagerly():
            canvas, up = tf.cond(finite, lambda: (canvas, one), rescaled)
        else:
            canvas, up = (canvas, one) if bool(finite) else rescaled()

        def grad(d_canvas, d_up):  # the adjoint of the adjoint: extraction
            del d_up  # `up` is a constant of the scaling
            return windows(d_canvas[None, :, :, None], grouped, None, size, shift, interpolation)

        return (canvas, up), grad

    canvas, up = summed(d_out)
    if normalize:
        # Fourier's adjoint rings over the whole margin, so its coverage and weights would
        # reach pixels no patch read: the weights are the bilinear ones.
        spread = "bilinear" if interpolation == "fourier" else interpolation
        ones = tf.ones(tf.shape(d_out), d_out.dtype.real_dtype)
        weight = _sum_adjoints(ones, grouped, object_shape, size, shift, spread)
        covered = (weight >= min_weight) & (weight > 0)
        safe = tf.where(covered, weight, tf.ones_like(weight))
        canvas = tf.where(covered, canvas / tf.cast(safe, canvas.dtype), tf.zeros_like(canvas))
    return _kernel.rescale(canvas, up)  # exact: 1 unless the sum was rescaled


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
