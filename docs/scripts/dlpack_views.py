"""Time the ways of copying an eager chunk into a NumPy output buffer (issue 10).

    python docs/scripts/dlpack_views.py

`run_chunked` in `ptycho/_eager.py` copies each XLA chunk into one preallocated buffer. It views
the chunk through DLPack: `EagerTensor.__dlpack__` on TensorFlow 2.20 and later, and the
capsule of `tf.experimental.dlpack.to_dlpack` on 2.16 to 2.19, which have no `__dlpack__`.
This prints the best of 20 copies of a 32 MiB complex64 chunk for each way available.
"""

import time

import numpy as np
import tensorflow as tf

from ptycho import _eager


def main() -> None:
    print("TensorFlow", tf.__version__, "NumPy", np.__version__)
    chunk = tf.complex(tf.random.normal([64, 64, 64, 16]), tf.random.normal([64, 64, 64, 16]))
    out = np.empty(chunk.shape.as_list(), np.complex64)
    ways = {
        "tensor.numpy()": chunk.numpy,
        "DLPack capsule (_eager.Capsule)": lambda: np.from_dlpack(_eager.Capsule(chunk)),
    }
    if hasattr(chunk, "__dlpack__"):
        ways["EagerTensor.__dlpack__"] = lambda: np.from_dlpack(chunk)
    for name, view in ways.items():
        best = float("inf")
        for _ in range(20):
            start = time.perf_counter()
            out[:] = view()
            best = min(best, time.perf_counter() - start)
        print(f"{name:<32} {best * 1e3:6.2f} ms per 32 MiB")


if __name__ == "__main__":
    main()
