"""The table of patch-extraction methods: each name and the function that builds its call.

Every builder takes the same :class:`Inputs` (one object and one set of positions) and
returns a :class:`Built`: a zero-argument callable that extracts the patches, and how its
time is scaled to the whole request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "JAX_HINT",
    "METHODS",
    "QUICK_SKIPS",
    "SINGLE_RUN",
    "Built",
    "Case",
    "Unavailable",
    "build",
    "make_inputs",
    "naive_bytes",
]

NAIVE_CHUNK = 256
JAX_HINT = 'jax not installed (pip install -e ".[jax]")'


class Unavailable(Exception):
    """A method that cannot run here; the message says why, for the table's note."""


@dataclass
class Case:
    """One benchmark configuration: object side, patch size, gridsize and groups."""

    size: int = 512
    N: int = 64
    gridsize: int = 2
    groups: int = 1024

    @property
    def c(self) -> int:
        return self.gridsize**2

    @property
    def patches(self) -> int:
        return self.groups * self.c

    @property
    def output_bytes(self) -> int:
        return self.patches * self.N * self.N * 8  # complex64


class Built(NamedTuple):
    """A method ready to time. `run` may cover a subset of the request: `label` then says how
    its time is extrapolated and `factor` scales it to the whole request."""

    run: Callable[[], Any]
    label: str = ""
    factor: float = 1.0


@dataclass
class Inputs:
    """What every method extracts from: the case, the object and its positions."""

    case: Case
    loop_patches: int
    obj: Any  # (size, size) complex64 NumPy array
    positions: Any  # channel positions (B, 1, 2, c), float32
    offsets_f: Any  # the legacy flat offsets (P, 1, 2, 1)
    obj_t: Any  # `obj` as a tensor
    gt_padded: Any  # the legacy padded object (1, size + N, size + N, 1)


def make_inputs(case: Case):
    """The object, channel positions `(B, 1, 2, c)` and the legacy padded inputs."""
    import numpy as np

    from ptycho.demo import demo_object, demo_scan

    obj = demo_object(case.size)
    flat = demo_scan(case.size, case.patches, seed=0).astype(np.float32)
    positions = flat.reshape(case.groups, case.c, 2).transpose(0, 2, 1)[:, None].copy()
    return obj, positions, flat.reshape(-1, 1, 2, 1)


def naive_bytes(case: Case) -> int:
    """Peak bytes of the naive plan: the padded object repeated once per patch."""
    padded = case.size + 2 * (case.N // 2)
    return case.patches * padded * padded * 8


def build(method: str, case: Case, loop_patches: int = 32) -> Built:
    """The call that extracts `case`'s patches with `method`, a name in :data:`METHODS`.

    The loop may be built on a subset of `loop_patches`; its :class:`Built` then says how
    it is extrapolated, and the call's result covers only that subset.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {tuple(METHODS)}. Received: method={method!r}")
    import tensorflow as tf

    from ptycho import tf_helper

    obj, positions, offsets_f = make_inputs(case)
    obj_t = tf.constant(obj)
    gt_padded = tf_helper.pad(obj_t[None, :, :, None], case.N // 2)
    return METHODS[method](Inputs(case, loop_patches, obj, positions, offsets_f, obj_t, gt_padded))


def _loop(inputs: Inputs) -> Built:
    from ptycho import raw_data

    case = inputs.case
    groups = max(1, min(case.groups, inputs.loop_patches // case.c))
    subset = inputs.offsets_f[: groups * case.c]
    label = "" if groups == case.groups else f"extrapolated from {groups * case.c} patches"

    def loop():
        return raw_data._get_image_patches_iterative(
            inputs.gt_padded, subset, case.N, groups, case.c
        )

    return Built(loop, label, case.groups / groups)


def _naive(inputs: Inputs, chunk: int | None = None) -> Built:
    """The plan of the original refactoring checklist: the padded object repeated once per
    patch and one `translate` call, on all patches at once or `chunk` at a time."""
    import tensorflow as tf

    from ptycho import tf_helper

    case, offsets_f = inputs.case, inputs.offsets_f
    N, P = case.N, case.patches
    chunk = chunk or P

    def naive():
        parts = []
        for start in range(0, P, chunk):
            stop = min(start + chunk, P)
            stack = tf.repeat(inputs.gt_padded, stop - start, axis=0)
            shifted = tf_helper.translate(stack, -offsets_f[start:stop, 0, :, 0])
            parts.append(shifted[:, :N, :N, 0])
        flat = tf.concat(parts, 0) if len(parts) > 1 else parts[0]
        return tf.transpose(tf.reshape(flat, [case.groups, case.c, N, N]), [0, 2, 3, 1])

    return Built(naive)


def _naive_chunked(inputs: Inputs) -> Built:
    return _naive(inputs, NAIVE_CHUNK)


def _batched(inputs: Inputs) -> Built:
    from ptycho import raw_data

    case = inputs.case

    def batched():
        return raw_data._get_image_patches_batched(
            inputs.gt_padded, inputs.offsets_f, case.N, case.groups, case.c
        )

    return Built(batched)


def _get_image_patches(inputs: Inputs) -> Built:
    import numpy as np

    from ptycho import raw_data

    zeros = np.zeros_like(inputs.positions)

    def get_image_patches():
        return raw_data.get_image_patches(
            inputs.obj, inputs.positions, zeros, N=inputs.case.N, gridsize=inputs.case.gridsize
        )

    return Built(get_image_patches)


def _layer_eager(inputs: Inputs) -> Built:
    import tensorflow as tf

    from ptycho.layers import PatchExtractionLayer

    layer = PatchExtractionLayer(inputs.case.N)
    pos_t = tf.constant(inputs.positions)
    return Built(lambda: layer(inputs.obj_t, pos_t))


def _layer_jit(inputs: Inputs) -> Built:
    import tensorflow as tf

    from ptycho.layers import PatchExtractionLayer

    jitted = tf.function(PatchExtractionLayer(inputs.case.N), jit_compile=True)
    pos_t = tf.constant(inputs.positions)
    return Built(lambda: jitted(inputs.obj_t, pos_t))


def _crop_and_resize(inputs: Inputs) -> Built:
    """`tf.image.crop_and_resize` on stacked real and imaginary channels: the closest stock
    TensorFlow op."""
    import numpy as np
    import tensorflow as tf

    case, obj_t = inputs.case, inputs.obj_t
    N, half = case.N, case.N // 2
    image = tf.stack([tf.math.real(obj_t), tf.math.imag(obj_t)], -1)[None]
    flat = inputs.offsets_f[:, 0, :, 0].astype(np.float64)
    y0, x0 = flat[:, 1] - half, flat[:, 0] - half
    boxes = np.stack([y0, x0, y0 + N - 1, x0 + N - 1], 1) / (case.size - 1)
    boxes_t = tf.constant(boxes, tf.float32)
    index = tf.zeros(case.patches, tf.int32)

    def crop():
        out = tf.image.crop_and_resize(image, boxes_t, index, [N, N], extrapolation_value=0)
        patches = tf.complex(out[..., 0], out[..., 1])
        return tf.transpose(tf.reshape(patches, [case.groups, case.c, N, N]), [0, 2, 3, 1])

    return Built(crop)


def _jax_vmap(inputs: Inputs) -> Built:
    """What a scientist might write in JAX instead: `vmap` over the positions of a
    `lax.dynamic_slice` footprint and a separable bilinear blend, under `jax.jit`.

    The object gets a zero margin as wide as a patch, so that the demo scan's positions
    (all on the object) read zeros beyond its edge; `dynamic_slice` clamps its starts,
    which is right only there. The patches come out in the layer's `(B, N, N, c)`.
    """
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as error:
        raise Unavailable(JAX_HINT) from error
    import numpy as np

    case = inputs.case
    N, margin = case.N, case.N + 1
    obj = jax.device_put(np.pad(inputs.obj, margin))
    flat = inputs.positions[:, 0].transpose(0, 2, 1).reshape(-1, 2)  # (P, 2): b-major
    positions = jax.device_put(flat)

    def patch(obj, position):
        x, y = position[0], position[1]
        fx, fy = x - jnp.floor(x), y - jnp.floor(y)
        start_y = jnp.floor(y).astype(jnp.int32) - N // 2 + margin
        start_x = jnp.floor(x).astype(jnp.int32) - N // 2 + margin
        win = jax.lax.dynamic_slice(obj, (start_y, start_x), (N + 1, N + 1))
        across = (1 - fx) * win[:, :-1] + fx * win[:, 1:]
        return (1 - fy) * across[:-1] + fy * across[1:]

    @jax.jit
    def extract(obj, positions):
        patches = jax.vmap(patch, in_axes=(None, 0))(obj, positions)
        return jnp.transpose(patches.reshape(case.groups, case.c, N, N), (0, 2, 3, 1))

    return Built(lambda: extract(obj, positions).block_until_ready())


def _copy(inputs: Inputs, warm: bool = False) -> Built:
    """`numpy.copyto` of an array the size of the output into a freshly allocated
    destination (into one reused destination with `warm`): the memory-bandwidth floor."""
    import numpy as np

    case = inputs.case
    source = np.ones((case.groups, case.N, case.N, case.c), np.complex64)
    reused = np.empty_like(source)

    def copy():
        target = reused if warm else np.empty_like(source)
        np.copyto(target, source)
        return target

    return Built(copy)


def _copy_warm(inputs: Inputs) -> Built:
    return _copy(inputs, warm=True)


# The methods in the order of the table.
METHODS: dict[str, Callable[[Inputs], Built]] = {
    "loop": _loop,
    "naive": _naive,
    "naive_chunked": _naive_chunked,
    "batched": _batched,
    "get_image_patches": _get_image_patches,
    "layer_eager": _layer_eager,
    "layer_jit": _layer_jit,
    "crop_and_resize": _crop_and_resize,
    "jax_vmap": _jax_vmap,
    "copy": _copy,
    "copy_warm": _copy_warm,
}
SINGLE_RUN = ("loop", "naive", "naive_chunked")  # timed once: seconds each
QUICK_SKIPS = ("naive", "naive_chunked")  # left out by `--quick`: seconds each, and known slow
