"""Train one small model with the package's layers under a `tf.distribute` strategy.

`tests/test_distribute.py` runs this script once per configuration, each in a fresh
process: logical devices and the multi-worker runtime must be set up before TensorFlow
initialises, which a running test session has long done. Usage:

    python tests/distribute_worker.py single OUT.npz        # the default (one-device) strategy
    python tests/distribute_worker.py mirrored OUT.npz      # MirroredStrategy, 2 logical CPUs
    TF_CONFIG=... python tests/distribute_worker.py multiworker OUT.npz --loop custom

The model is a small ptychographic reconstruction: a `LearnableObject` (whose
`PatchExtractionLayer` runs the package's XLA kernel) gives the object patch at every scan
position, the patch is multiplied by a fixed probe, and the output is the far-field
amplitude `|FFT(probe * patch)| / N`. Targets are simulated from a known object with the
float64 SciPy oracle, so every process trains on bit-identical data without touching
TensorFlow before the strategy exists.

`--loop fit` trains with `Model.fit`; `--loop custom` with a `strategy.run` loop that does
the same arithmetic (mean squared error over each global batch, SGD with momentum). The
custom loop exists because Keras 3's `Model.fit` fails under `MultiWorkerMirroredStrategy`
with more than one worker (keras-team/keras#20585); see `docs/distributed.md`.

`OUT.npz` receives the per-epoch losses, the final weights, the number of replicas, the
devices holding the object weights and how often training traced the XLA kernels.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

OBJECT_SHAPE = (24, 24)
N = 8
POSITIONS = 64
GLOBAL_BATCH = 16  # split evenly: 8 positions per replica with two replicas
EPOCHS = 4
LEARNING_RATE = 4.0
MOMENTUM = 0.9


def simulate():
    """Scan positions, probe and diffraction amplitudes of a known object (float64 oracle)."""
    from ptycho.reference import oracle_patches

    rng = np.random.default_rng(2024)
    height, width = OBJECT_SHAPE
    truth = rng.uniform(0.5, 1.0, OBJECT_SHAPE) * np.exp(1j * rng.uniform(-1, 1, OBJECT_SHAPE))
    x = rng.uniform(N / 2, width - N / 2, POSITIONS)
    y = rng.uniform(N / 2, height - N / 2, POSITIONS)
    positions = np.stack([x, y], axis=1).astype(np.float32)
    yy, xx = np.mgrid[:N, :N] - N // 2
    probe = np.exp(-(xx**2 + yy**2) / (2 * 2.5**2)) * np.exp(0.3j * xx)
    patches = oracle_patches(truth, positions, N)  # (P, N, N) complex128
    amplitude = np.abs(np.fft.fft2(probe * patches)) / N
    return positions, probe.astype(np.complex64), amplitude[..., None].astype(np.float32)


def make_strategy(kind: str):
    import tensorflow as tf

    if kind == "single":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("`multiworker` needs the `TF_CONFIG` environment variable.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {kind!r}.")


def build_model(probe):
    import keras
    import tensorflow as tf

    from ptycho.layers import LearnableObject

    def far_field(patches):  # (B, N, N, 1) complex -> (B, N, N, 1) amplitude
        wave = patches[..., 0] * tf.constant(probe)
        return tf.abs(tf.signal.fft2d(wave))[..., None] / N

    positions = keras.Input((2,), name="positions")
    patches = LearnableObject(OBJECT_SHAPE, N, name="object")(positions)
    amplitude = keras.layers.Lambda(far_field, output_shape=(N, N, 1), name="far_field")(patches)
    return keras.Model(positions, amplitude)


def make_dataset(positions, amplitude):
    """Global batches, the same on every worker.

    DATA sharding splits every global batch among all replicas of all workers, so a
    distributed step sees exactly the batch one device sees.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((positions, amplitude)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def fit(strategy, model, optimizer, dataset, jit_compile: bool) -> list[float]:
    with strategy.scope():
        model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    history = model.fit(dataset, epochs=EPOCHS, shuffle=False, verbose=0)
    return history.history["loss"]


def custom_loop(strategy, model, optimizer, dataset) -> list[float]:
    import tensorflow as tf

    with strategy.scope():
        optimizer.build(model.trainable_variables)

    def replica_step(positions, target):
        with tf.GradientTape() as tape:
            prediction = model(positions, training=True)
            per_example = tf.reduce_mean(tf.square(prediction - target), axis=[1, 2, 3])
            # Divide by the global batch, not the replica's share: the gradients of all
            # replicas are summed by `apply_gradients`.
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(batch):
        return strategy.reduce("SUM", strategy.run(replica_step, args=batch), axis=None)

    batches = strategy.experimental_distribute_dataset(dataset)
    return [np.mean([float(train_step(batch)) for batch in batches]) for _ in range(EPOCHS)]


def train(kind: str, loop: str = "fit", jit_compile: bool = False) -> dict:
    strategy = make_strategy(kind)  # before anything initialises the TensorFlow runtime

    import keras

    from ptycho import _kernel

    positions, probe, amplitude = simulate()
    with strategy.scope():
        model = build_model(probe)
        optimizer = keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM)
    dataset = make_dataset(positions, amplitude)

    kernels = (_kernel.gather_windows, _kernel.gather_windows_vjp)
    traced_before = np.array([kernel.experimental_get_tracing_count() for kernel in kernels])
    if loop == "fit":
        losses = fit(strategy, model, optimizer, dataset, jit_compile)
    else:
        losses = custom_loop(strategy, model, optimizer, dataset)
    traced = [kernel.experimental_get_tracing_count() for kernel in kernels] - traced_before

    layer = model.get_layer("object")
    copies = strategy.experimental_local_results(layer.real.value)  # the tf.Variable(s)
    return {
        "loss": np.array(losses, np.float64),
        "real": layer.real.numpy(),
        "imag": layer.imag.numpy(),
        "replicas": np.array(strategy.num_replicas_in_sync),
        "copies": np.array([v.device for v in copies]),
        "kernel_traces": traced,  # forward and gradient kernels traced by training
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("strategy", choices=["single", "mirrored", "multiworker"])
    parser.add_argument("output", help="the .npz file to write")
    parser.add_argument("--loop", choices=["fit", "custom"], default="fit")
    parser.add_argument(
        "--jit-compile", action="store_true", help="`Model.compile(jit_compile=True)` (fit only)"
    )
    args = parser.parse_args(argv)
    result = train(args.strategy, loop=args.loop, jit_compile=args.jit_compile)
    np.savez(args.output, **result)


if __name__ == "__main__":
    main()
