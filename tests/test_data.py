"""Dataset files: the NPZ contract read, validated, memory-mapped and written atomically."""

import zipfile

import numpy as np
import pytest

from ptycho._files import atomic_path
from ptycho.data import (
    DataError,
    dataset_layout,
    load_dataset,
    open_npz_arrays,
    save_npz,
)


def small_dataset(rng, n=12, N=8):
    return {
        "objectGuess": (rng.standard_normal((40, 50)) + 1j).astype(np.complex64),
        "probeGuess": np.ones((N, N), np.complex64),
        "xcoords": rng.uniform(10, 40, n),
        "ycoords": rng.uniform(10, 30, n),
        "diffraction": rng.random((n, N, N)).astype(np.float32),
        "Y": np.zeros((n, N, N), np.complex64),
        "scan_index": np.arange(n),
    }


def test_round_trip_of_the_contract(rng, tmp_path):
    data = small_dataset(rng)
    save_npz(tmp_path / "data.npz", data)
    loaded = load_dataset(tmp_path / "data.npz")
    assert set(loaded) == set(data)
    for key, value in data.items():
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].dtype == np.dtype(value.dtype) or key == "scan_index"


def test_uncompressed_arrays_are_memory_mapped(rng, tmp_path):
    data = small_dataset(rng)
    save_npz(tmp_path / "data.npz", data)
    arrays = open_npz_arrays(tmp_path / "data.npz")
    assert isinstance(arrays["diffraction"], np.memmap)
    np.testing.assert_array_equal(arrays["diffraction"], data["diffraction"])


def test_compressed_files_and_the_old_key_are_read(rng, tmp_path):
    data = small_dataset(rng)
    data["diff3d"] = data.pop("diffraction")
    np.savez_compressed(tmp_path / "old.npz", **data)
    loaded = load_dataset(tmp_path / "old.npz")
    np.testing.assert_array_equal(loaded["diffraction"], data["diff3d"])
    assert "diff3d" not in loaded


def test_dtypes_are_converted_to_the_contract(rng, tmp_path):
    data = small_dataset(rng)
    data["objectGuess"] = data["objectGuess"].astype(np.complex128)
    data["xcoords"] = data["xcoords"].astype(np.float32)
    save_npz(tmp_path / "data.npz", data)
    loaded = load_dataset(tmp_path / "data.npz")
    assert loaded["objectGuess"].dtype == np.complex64
    assert loaded["xcoords"].dtype == np.float64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("xcoords"), "missing key 'xcoords'"),
        (lambda d: d.update(objectGuess=np.ones(5, np.complex64)), "'objectGuess' must have 2"),
        (lambda d: d.update(xcoords=np.full(12, np.nan)), "'xcoords' holds NaN"),
        (lambda d: d.update(ycoords=np.ones(11)), "'ycoords' has 11 values"),
        (lambda d: d.update(diffraction=np.ones((3, 8, 8), np.float32)), "'diffraction' has 3"),
        (lambda d: d.update(probeGuess=np.ones((8, 9), np.complex64)), "must be square"),
        (lambda d: d.update(xcoords=np.array(["a"] * 12)), "'xcoords' must be"),
        (lambda d: d.update(objectGuess=np.ones((0, 3), np.complex64)), "must not be empty"),
    ],
)
def test_every_key_is_checked_and_named(rng, tmp_path, change, message):
    data = small_dataset(rng)
    change(data)
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / "bad.npz")


def test_unreadable_files_are_refused(rng, tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "missing.npz")
    (tmp_path / "random.npz").write_bytes(rng.bytes(1000))
    with pytest.raises(DataError, match="not a readable NPZ"):
        load_dataset(tmp_path / "random.npz")
    save_npz(tmp_path / "good.npz", small_dataset(rng))
    content = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError):
        load_dataset(tmp_path / "truncated.npz")
    np.savez(tmp_path / "objects.npz", objectGuess=np.array([{}, None], dtype=object))
    with pytest.raises(DataError):
        load_dataset(tmp_path / "objects.npz")


def test_a_truncated_member_is_detected_before_mapping(rng, tmp_path):
    """A member whose data ends before its declared shape is refused, not mapped."""
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("xcoords.npy", "w") as member:
            header = {"descr": "<f8", "fortran_order": False, "shape": (1000,)}
            np.lib.format.write_array_header_1_0(member, header)
            member.write(np.zeros(10).tobytes())
    with pytest.raises(DataError):
        load_dataset(path, require=["xcoords"])


def test_atomic_path_leaves_nothing_on_failure_and_never_overwrites(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"already exists \(pass force=True to overwrite"):
        with atomic_path(target):
            pass
    with atomic_path(target, force=True) as temporary:
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


def test_any_key_name_can_be_saved(tmp_path):
    """Was: a key named `file` collided with `numpy.savez`'s own argument."""
    save_npz(tmp_path / "odd.npz", {"file": np.arange(3), "force": np.ones(2)})
    arrays = open_npz_arrays(tmp_path / "odd.npz")
    np.testing.assert_array_equal(arrays["file"], np.arange(3))


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    save_npz(tmp_path / "a.npz", {"x": np.ones(2)})
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o666 & ~umask


def damage(path, key):
    """Flip the last byte of a stored member's data: its CRC-32 fails when it is read."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
    content = bytearray(path.read_bytes())
    at = info.header_offset
    start = at + 30 + int.from_bytes(content[at + 26 : at + 28], "little")
    start += int.from_bytes(content[at + 28 : at + 30], "little")
    content[start + info.compress_size - 1] ^= 0xFF
    path.write_bytes(bytes(content))


def test_dataset_layout_reads_the_headers_only(rng, tmp_path):
    data = small_dataset(rng)
    data["diffraction"] = data["diffraction"].astype(np.float64)  # converted: held
    save_npz(tmp_path / "data.npz", data)
    damage(tmp_path / "data.npz", "diffraction")
    layout = dataset_layout(tmp_path / "data.npz")
    assert list(layout) == list(data)
    assert layout["objectGuess"] == ((40, 50), np.complex64, 0)  # memory-mapped
    assert layout["diffraction"] == ((12, 8, 8), np.float32, 12 * 8 * 8 * 4)
    assert layout["scan_index"].dtype == np.int64
    with pytest.raises(DataError, match="bad CRC-32"):
        load_dataset(tmp_path / "data.npz")
    np.savez_compressed(tmp_path / "packed.npz", **small_dataset(rng))
    assert dataset_layout(tmp_path / "packed.npz")["objectGuess"].held == 40 * 50 * 8


def test_open_npz_arrays_reads_only_the_keys_asked_for(rng, tmp_path):
    path = tmp_path / "data.npz"
    save_npz(path, small_dataset(rng))
    damage(path, "scan_index")
    arrays = open_npz_arrays(path, keys=["xcoords", "nothing"])
    assert list(arrays) == ["xcoords"]
    with pytest.raises(DataError, match=r"'scan_index\.npy' is corrupt \(bad CRC-32\)"):
        open_npz_arrays(path)
    assert isinstance(open_npz_arrays(path, verify=False)["scan_index"], np.memmap)
