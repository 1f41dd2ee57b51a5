"""Memory bounds: grouping in blocks, a streaming shuffle, checked allocations, cgroup limits."""

import json
import subprocess
import sys
import tracemalloc
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import oracle_patches, random_object

from ptycho import _memory, extract_patches, grouping, patch_dataset
from ptycho.demo import demo_bytes, demo_dataset, demo_object
from ptycho.grouping import group_positions, grouping_bytes
from ptycho.layers import LearnableObject


@pytest.fixture
def little_memory(monkeypatch):
    """Pretend that only 1 MiB of memory is free."""
    monkeypatch.setattr(_memory, "available_memory", lambda: 2**20)


# Grouping


def former_group_positions(x, y, gridsize, n_groups, neighbors, seed):
    """The implementation before grouping went in blocks: every neighbour list at once."""
    from scipy.spatial import cKDTree

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    c = gridsize**2
    points = np.stack([x, y], axis=1).astype(np.float32)
    if c == 1:
        count = x.size if n_groups is None else min(n_groups, x.size)
        indices = np.arange(count)[:, None]
    else:
        k = min(max(neighbors, c), x.size)
        _, near = cKDTree(points.astype(np.float64)).query(points.astype(np.float64), k=k)
        near = near.reshape(x.size, k)
        rng = np.random.default_rng(seed)
        count = x.size if n_groups is None else n_groups
        starts = rng.choice(x.size, size=count, replace=count > x.size)
        picks = np.argsort(rng.random((count, k - 1)), axis=1)[:, : c - 1] + 1
        indices = np.concatenate([near[starts, :1], np.take_along_axis(near[starts], picks, 1)], 1)
    members = points[indices]
    mean = members.astype(np.float64).mean(axis=1, keepdims=True)
    spacing = np.spacing(np.abs(members).max(axis=1, keepdims=True)).astype(np.float64)
    mean = (np.round(mean / spacing) * spacing).astype(np.float32)
    local = members - mean
    global_offsets = np.transpose(mean, (0, 2, 1))[:, None]
    local_offsets = np.transpose(local, (0, 2, 1))[:, None]
    return global_offsets, local_offsets, indices.astype(np.int64)


@pytest.mark.parametrize("block_bytes", [1, 20_000, 64 * 2**20])  # 1, a few, all groups a block
@pytest.mark.parametrize("gridsize", [1, 2, 3, 4])
def test_grouping_in_blocks_gives_the_former_groups_bit_for_bit(monkeypatch, block_bytes, gridsize):
    monkeypatch.setattr(grouping, "_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(gridsize)
    x, y = rng.uniform(10, 300, 257), rng.uniform(10, 300, 257)
    for n_groups, neighbors, seed in [(None, 4, 0), (53, 9, 1), (700, 40, 2), (5, 10**6, 3)]:
        groups = group_positions(x, y, gridsize, n_groups, neighbors, seed)
        expected = former_group_positions(x, y, gridsize, n_groups, neighbors, seed)
        for got, want in zip(
            (groups.global_offsets, groups.local_offsets, groups.nn_indices), expected, strict=True
        ):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def test_grouping_peak_stays_within_its_estimate_and_far_below_all_neighbour_lists(monkeypatch):
    """numpy's allocations, traced: bounded by one block, not by n x neighbors."""
    monkeypatch.setattr(grouping, "_BLOCK_BYTES", 2**20)
    rng = np.random.default_rng(0)
    n, neighbors = 10_000, 300
    x, y = rng.uniform(0, 1000, n), rng.uniform(0, 1000, n)
    tracemalloc.start()
    try:
        group_positions(x, y, 2, None, neighbors)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= grouping_bytes(n, 2, None, neighbors)
    assert peak < n * neighbors * 8  # the former peak held four such arrays (96 MB here)


def test_grouping_bytes_counts_a_block_not_every_neighbour_list():
    million = grouping_bytes(10**6, 2, None, 200)
    outputs = 10**6 * (8 + 16 * 4)
    assert outputs < million < 300 * 2**20  # the former implementation peaked at 6.2 GiB
    # With most neighbours, a block holds few groups, and the total barely grows.
    assert grouping_bytes(10**6, 2, None, 10**6) < million + 2 * grouping._BLOCK_BYTES
    assert grouping_bytes(10, 1, None, 4) < grouping_bytes(10, 2, None, 4)
    assert "grouping_bytes" in grouping.__all__


def test_grouping_larger_than_memory_is_refused_naming_neighbors(little_memory):
    x = np.arange(100_000.0)
    with pytest.raises(ValueError, match=r"neighbors=100000.*GiB of memory available"):
        group_positions(x, x, 2, neighbors=100_000)


@pytest.mark.parametrize("name", ["xcoords", "ycoords"])
@pytest.mark.parametrize("value", [1e39, -1e39, 3.5e38])
def test_coordinates_beyond_float32_are_refused(name, value):
    """Was: finite in float64, inf after the float32 cast, and inf offsets out."""
    coords = {"xcoords": np.arange(8.0), "ycoords": np.arange(8.0)}
    coords[name][3] = value
    with pytest.raises(ValueError, match=f"{name} must lie within the float32 range"):
        group_positions(**coords, gridsize=2)


def test_the_largest_float32_coordinates_are_accepted():
    top = float(np.finfo(np.float32).max)
    x = np.array([top, top, -top, -top])
    groups = group_positions(x, x[::-1])
    np.testing.assert_array_equal(groups.positions[:, 0, 0, 0], x.astype(np.float32))
    together = group_positions(x, -x, 2)  # was: an inf spacing, and NaN offsets
    assert np.all(np.isfinite(together.local_offsets))
    np.testing.assert_array_equal(
        np.sort(together.positions[0, 0, 0]), np.sort(x.astype(np.float32))
    )


def test_members_too_far_apart_for_float32_offsets_are_refused():
    top = 3e38
    x = np.array([-top, top, top, top])
    with pytest.raises(ValueError, match="further apart than float32"):
        group_positions(x, np.zeros(4), 2)


# The streaming shuffle of patch_dataset


def epochs(dataset, count):
    return [[tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset] for _ in range(count)]


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_shuffled_epochs_are_permutations_with_aligned_targets_and_objects(rng, drop_remainder):
    objs = random_object(rng, (45, 12, 12, 1))
    positions = rng.uniform(0, 12, (45, 1, 2, 4)).astype(np.float32)
    targets = {"id": np.arange(45), "value": rng.random((45, 3))}
    dataset = patch_dataset(
        objs, positions, 4, 8, targets=targets, shuffle=True, seed=5, drop_remainder=drop_remainder
    )
    batches = 45 // 8 if drop_remainder else -(-45 // 8)
    assert dataset.cardinality().numpy() == batches
    expected = extract_patches(objs, positions, 4).numpy()
    orders = []
    for epoch in epochs(dataset, 3):
        assert len(epoch) == batches
        order = np.concatenate([t["id"] for _, t in epoch])
        kept = 40 if drop_remainder else 45
        assert len(order) == kept and len(set(order)) == kept  # each position at most once
        np.testing.assert_array_equal(np.concatenate([p for p, _ in epoch]), expected[order])
        np.testing.assert_array_equal(
            np.concatenate([t["value"] for _, t in epoch]), targets["value"][order]
        )
        orders.append(order)
    if not drop_remainder:
        assert all(sorted(order) == list(range(45)) for order in orders)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    again = patch_dataset(
        objs, positions, 4, 8, targets=targets, shuffle=True, seed=5, drop_remainder=drop_remainder
    )
    for order, epoch in zip(orders, epochs(again, 3), strict=True):
        np.testing.assert_array_equal(np.concatenate([t["id"] for _, t in epoch]), order)


def test_the_shuffle_holds_indices_not_a_buffer_of_elements(rng):
    """`Dataset.shuffle(count)` held every element: +2 GB at 10^7 positions."""
    positions = rng.uniform(0, 8, (100, 2)).astype(np.float32)
    dataset = patch_dataset(np.ones((8, 8)), positions, 2, 10, shuffle=True, seed=0)
    graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    assert "StatelessShuffle" in ops
    assert not any(op.startswith("ShuffleDataset") for op in ops), ops


def test_unshuffled_batches_are_in_order(rng):
    positions = rng.uniform(0, 8, (23, 2)).astype(np.float32)
    (epoch,) = epochs(patch_dataset(np.ones((8, 8)), positions, 2, 5, targets=np.arange(23)), 1)
    np.testing.assert_array_equal(np.concatenate([t for _, t in epoch]), np.arange(23))


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_num_parallel_calls_is_checked_when_the_dataset_is_made(value, error):
    with pytest.raises(error, match="num_parallel_calls"):
        patch_dataset(np.ones((8, 8)), np.zeros((5, 2)), 2, 2, num_parallel_calls=value)


@pytest.mark.parametrize("value", [1, 3, tf.data.AUTOTUNE])
def test_num_parallel_calls_accepts_positive_ints_and_autotune(value):
    dataset = patch_dataset(np.ones((8, 8)), np.zeros((5, 2)), 2, 2, num_parallel_calls=value)
    assert [b.shape[0] for b in dataset] == [2, 2, 1]


def test_drop_remainder_with_a_batch_larger_than_the_scan_is_refused():
    with pytest.raises(ValueError, match="batch_size"):
        patch_dataset(np.ones((8, 8)), np.zeros((5, 2)), 2, 6, drop_remainder=True)


# LearnableObject


def test_learnable_object_refuses_an_object_larger_than_memory():
    with pytest.raises(ValueError, match=r"`object_shape`=\(1000000, 1000000\).*smaller"):
        LearnableObject((10**6, 10**6), 8)


def test_learnable_object_counts_its_weights_and_their_starting_value(monkeypatch):
    from ptycho.layers import learnable_object

    need = learnable_object._construction_bytes(64 * 64, 4, False)
    assert need >= 2 * 64 * 64 * 4  # the two float32 weights, at least
    monkeypatch.setattr(_memory, "available_memory", lambda: need - 1)
    with pytest.raises(ValueError, match="object_shape"):
        LearnableObject((64, 64), 8)
    monkeypatch.setattr(_memory, "available_memory", lambda: need)
    assert LearnableObject((64, 64), 8).real.shape == (64, 64)


def test_a_tampered_keras_file_with_a_huge_object_is_refused(tmp_path):
    """Was: `from_config` built the object, reaching 17.5 GB before failing."""
    model = keras.Sequential([keras.Input((2,)), LearnableObject((16, 16), 4, name="object")])
    path, tampered = tmp_path / "model.keras", tmp_path / "tampered.keras"
    model.save(path)
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"].endswith("LearnableObject"):
                        layer["config"]["object_shape"] = [10**6, 10**6]
                data = json.dumps(config).encode()
            target.writestr(item, data)
    with pytest.raises((ValueError, TypeError), match=r"object_shape.*would need"):
        keras.saving.load_model(tampered)  # Keras wraps the ValueError in a TypeError


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_learnable_object_starts_from_initial_in_its_own_precision(rng, dtype):
    initial = random_object(rng, (9, 11), np.complex128)
    layer = LearnableObject((9, 11), 4, initial=initial, dtype=dtype)
    complex_dtype = np.complex128 if dtype == "float64" else np.complex64
    np.testing.assert_array_equal(layer.value.numpy(), initial.astype(complex_dtype))
    real = LearnableObject((9, 11), 4, initial=initial.real, dtype=dtype)
    np.testing.assert_array_equal(real.value.numpy(), initial.real.astype(complex_dtype))
    ones = LearnableObject((9, 11), 4, dtype=dtype)
    assert ones.real.dtype == dtype and np.all(ones.value.numpy() == 1)


# The demonstration dataset


def former_demo_object(size):
    coords = (np.arange(size) - size / 2) / size
    y, x = np.meshgrid(coords, coords, indexing="ij")
    radius = np.hypot(x, y)
    amplitude = 0.6 + 0.3 * np.cos(40 * np.pi * radius) * np.exp(-4 * radius)
    for cx, cy, r in ((-0.2, -0.15, 0.08), (0.18, 0.1, 0.05), (0.05, -0.25, 0.04)):
        amplitude += 0.4 * (np.hypot(x - cx, y - cy) < r)
    phase = 2.0 * x - 1.0 * y + 1.5 * np.exp(-((x - 0.1) ** 2 + (y + 0.1) ** 2) / 0.01)
    return amplitude * np.exp(1j * phase)


@pytest.mark.parametrize("size", [1, 6, 97, 392])
def test_demo_object_computed_in_place_is_the_former_one_bit_for_bit(size):
    expected = former_demo_object(size)
    for dtype in (np.complex64, np.complex128):
        got = demo_object(size, dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.view(np.uint8), expected.astype(dtype).view(np.uint8))


def test_demo_object_peaks_within_its_count():
    """numpy's allocations, traced: 32 bytes a pixel (72 before it worked in place), and
    a ufunc's buffers (16 KiB on numpy 1.26 and 2.4; `1j * phase` had added a 128 KiB
    casting buffer on 2.x and two on 1.26, over the bound)."""
    size = 600
    tracemalloc.start()
    try:
        demo_object(size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 24 * size**2 < peak <= 32 * size**2 + 2**18


@pytest.mark.parametrize(("size", "N", "count"), [(200_000, 64, 16), (392, 64, 10**9)])
def test_demo_dataset_larger_than_memory_is_refused(size, N, count):
    with pytest.raises(ValueError, match=rf"size={size}, N={N} and count={count}.*GiB"):
        demo_dataset(size, N, count)


def test_demo_bytes_counts_both_stages():
    assert demo_bytes(5000, 8, 16) == 32 * 5000**2  # the object's stage
    assert demo_bytes(64, 32, 1000) >= 28 * 1000 * 32**2  # the patterns' stage


# Container memory limits (cgroup v1 and v2)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def room(tmp_path, membership):
    write(tmp_path / "self_cgroup", membership)
    return _memory._cgroup_room(str(tmp_path / "fs"), str(tmp_path / "self_cgroup"))


def test_cgroup_v2_takes_the_tightest_limit_from_the_process_group_up(tmp_path):
    fs = tmp_path / "fs"
    write(fs / "memory.max", "max\n")
    write(fs / "jobs/memory.max", "3000\n")
    write(fs / "jobs/memory.current", "1000\n")
    write(fs / "jobs/memory.stat", "anon 500\ninactive_file 400\nactive_file 100\n")
    write(fs / "jobs/one/memory.max", "max\n")
    write(fs / "jobs/one/memory.current", "900\n")
    assert room(tmp_path, "0::/jobs/one\n") == 3000 - (1000 - 400)
    write(fs / "jobs/one/memory.max", "1500\n")
    assert room(tmp_path, "0::/jobs/one\n") == 1500 - 900
    assert room(tmp_path, "0::/elsewhere\n") is None  # only the unlimited root applies


def test_cgroup_v2_falls_back_to_the_root_files(tmp_path):
    """A container without its own cgroup namespace shows the host's path."""
    write(tmp_path / "fs/memory.max", "1073741824\n")
    write(tmp_path / "fs/memory.current", "268435456\n")
    assert room(tmp_path, "0::/docker/0123abcd\n") == 768 * 2**20
    assert room(tmp_path, "") == 768 * 2**20  # no membership file content at all


def test_cgroup_v1_limits_are_read_and_no_limit_is_recognised(tmp_path):
    memory = tmp_path / "fs/memory"
    write(memory / "memory.limit_in_bytes", "9223372036854771712\n")  # no limit
    write(memory / "memory.usage_in_bytes", "5000000\n")
    membership = "12:pids:/\n4:memory:/batch/task\n3:cpu,cpuacct:/\n0::/\n"
    assert room(tmp_path, membership) is None
    write(memory / "batch/memory.limit_in_bytes", "4000\n")
    write(memory / "batch/memory.usage_in_bytes", "2500\n")
    write(memory / "batch/memory.stat", "cache 900\ntotal_inactive_file 700\n")
    assert room(tmp_path, membership) == 4000 - (2500 - 700)
    write(memory / "batch/task/memory.limit_in_bytes", "2000\n")
    write(memory / "batch/task/memory.usage_in_bytes", "1900\n")
    assert room(tmp_path, membership) == 100
    write(memory / "batch/task/memory.usage_in_bytes", "2100\n")  # over the limit
    assert room(tmp_path, membership) == 0


def test_both_cgroup_versions_and_unreadable_files(tmp_path):
    fs = tmp_path / "fs"
    write(fs / "memory.max", "6000\n")
    write(fs / "memory.current", "1000\n")
    write(fs / "memory/memory.limit_in_bytes", "4000\n")
    write(fs / "memory/memory.usage_in_bytes", "1000\n")
    assert room(tmp_path, "4:memory:/\n0::/\n") == 3000
    write(fs / "memory/memory.usage_in_bytes", "garbage\n")
    assert room(tmp_path, "4:memory:/\n0::/\n") == 5000
    assert _memory._cgroup_room(str(tmp_path / "none"), str(tmp_path / "none")) is None


def test_available_memory_is_the_smaller_figure(monkeypatch):
    monkeypatch.setattr(_memory, "_meminfo", lambda: 10**9)
    monkeypatch.setattr(_memory, "_cgroup_room", lambda: 10**6)
    assert _memory.available_memory() == 10**6
    monkeypatch.setattr(_memory, "_cgroup_room", lambda: None)
    assert _memory.available_memory() == 10**9
    with pytest.raises(ValueError, match=r"the test would need 0\.9 GiB, .* Try less\.$"):
        _memory.check_memory(10**9 + 1, "the test", "Try less.")


def test_the_memory_check_does_not_import_tensorflow():
    code = (
        "import sys; from ptycho import _memory; _memory.available_memory(); "
        "print('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_new_object_shapes_reuse_the_compiled_programs():
    """Eagerly, object tables are padded to bucketed shapes, so that calls with many object
    shapes compile a few programs (TensorFlow never frees one) and give the same results."""
    from ptycho import _kernel, reassemble_patches

    rng = np.random.default_rng(0)
    positions = rng.uniform(-2, 14, (8, 2)).astype(np.float32)

    def patches_and_gradient(obj):
        obj = tf.constant(obj)
        with tf.GradientTape() as tape:
            tape.watch(obj)
            out = extract_patches(obj, positions, 4)
            loss = tf.reduce_sum(tf.math.real(out) * tf.math.imag(out))
        return out.numpy(), tape.gradient(loss, obj)

    patches_and_gradient(np.ones((9, 9), np.complex64))  # the 16 x 16 bucket, compiled once
    reassemble_patches(np.ones((8, 4, 4, 1), np.complex64), positions, (9, 9))
    kernels = (_kernel.gather_windows, _kernel.gather_windows_vjp)
    traces = [kernel.experimental_get_tracing_count() for kernel in kernels]
    for height in range(9, 17):
        for width in (9, 13, 16):
            obj = (rng.standard_normal((height, width)) + 1j).astype(np.complex64)
            out, gradient = patches_and_gradient(obj)
            error = np.abs(out[..., 0] - oracle_patches(obj, positions, 4)).max()
            assert error <= 1e-6 * np.abs(obj).max()
            assert gradient.shape == (height, width)
            canvas = reassemble_patches(out, positions, (height, width))
            assert canvas.shape == (height, width)
    assert [kernel.experimental_get_tracing_count() for kernel in kernels] == traces


def test_the_memory_check_survives_autograph():
    """A `tf.function` converts what it calls with AutoGraph, the file reading included."""

    @tf.function
    def traced():
        return tf.constant(_memory.available_memory() or 0, tf.int64)

    assert int(traced()) > 0


@pytest.mark.parametrize("shuffle", [False, True])
def test_drop_remainder_keeps_the_batch_size_static(shuffle):
    """Slicing batches by index must not lose what `Dataset.batch(drop_remainder=True)` gave."""
    obj = np.ones((8, 8), np.complex64)
    dataset = patch_dataset(
        obj, np.zeros((10, 2)), 4, 4, targets=np.zeros(10), shuffle=shuffle, drop_remainder=True
    )
    patches, targets = dataset.element_spec
    assert patches.shape.as_list() == [4, 4, 4, 1] and targets.shape.as_list() == [4]
