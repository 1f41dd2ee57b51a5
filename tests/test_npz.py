"""Dataset files from hostile users (issue 11): every fault is one line, never a crash.

Each test crafts the bytes of a file: a flipped byte, a zip bomb, a header that lies, an
encrypted or unknown member, a corrupt stream, a special file, a file that shrinks while
it is read, values beyond the contract's dtype, and a run larger than the memory.
"""

import io
import lzma
import os
import struct
import subprocess
import sys
import textwrap
import tokenize
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from ptycho import _memory, _npz, cli
from ptycho import data as data_module
from ptycho.data import DataError, load_dataset, open_npz_arrays, read_rows, save_npz

STORED, DEFLATED, BZIP2, LZMA = (
    zipfile.ZIP_STORED,
    zipfile.ZIP_DEFLATED,
    zipfile.ZIP_BZIP2,
    zipfile.ZIP_LZMA,
)
COMPRESSED = [DEFLATED, BZIP2, LZMA]


def small_dataset(n=12, N=8):
    rng = np.random.default_rng(7)
    return {
        "objectGuess": (rng.standard_normal((40, 50)) + 1j).astype(np.complex64),
        "probeGuess": np.ones((N, N), np.complex64),
        "xcoords": rng.uniform(15, 35, n),
        "ycoords": rng.uniform(15, 25, n),
        "diffraction": rng.random((n, N, N)).astype(np.float32),
        "Y": np.zeros((n, N, N), np.complex64),
    }


def npy(value) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
    return buffer.getvalue()


def npy_header(shape, descr="<c8", version=(1, 0)) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    write = {(1, 0): np.lib.format.write_array_header_1_0}.get(
        version, np.lib.format.write_array_header_2_0
    )
    write(buffer, header)
    return buffer.getvalue()


def raw_npy(header: bytes) -> bytes:
    """A version 1.0 `.npy` member whose header is `header`, as it is."""
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def write_zip(path, members: dict, method=STORED):
    """A zip file of `KEY.npy` members: arrays, or raw bytes written as they are."""
    with zipfile.ZipFile(path, "w", method) as archive:
        for key, value in members.items():
            archive.writestr(f"{key}.npy", value if isinstance(value, bytes) else npy(value))
    return path


def offsets(content, name: str) -> tuple:
    """Offsets of member `name`'s central directory entry, local header and data."""
    end = content.rindex(b"PK\x05\x06")
    (at,) = struct.unpack("<I", content[end + 16 : end + 20])
    while content[at : at + 4] == b"PK\x01\x02":
        name_length, extra_length, comment_length = struct.unpack(
            "<HHH", content[at + 28 : at + 34]
        )
        if content[at + 46 : at + 46 + name_length] == name.encode():
            (local,) = struct.unpack("<I", content[at + 42 : at + 46])
            local_name, local_extra = struct.unpack("<HH", content[local + 26 : local + 30])
            return at, local, local + 30 + local_name + local_extra
        at += 46 + name_length + extra_length + comment_length
    raise KeyError(name)


def edit(path, name: str, change) -> None:
    """Rewrite the file, `change(content, central, local, data)` editing it in place."""
    content = bytearray(path.read_bytes())
    change(content, *offsets(content, name))
    path.write_bytes(bytes(content))


def put(content, at: int, fmt: str, value) -> None:
    content[at : at + struct.calcsize(fmt)] = struct.pack(fmt, value)


def get(content, at: int, fmt: str):
    return struct.unpack(fmt, content[at : at + struct.calcsize(fmt)])[0]


def refused(path, message, context=None, **kwargs) -> DataError:
    with pytest.raises(DataError, match=message) as caught:
        load_dataset(path, **kwargs)
    assert "\n" not in str(caught.value)
    if context is not None:  # the library's own exception, turned into a DataError
        assert isinstance(caught.value.__context__, context), repr(caught.value.__context__)
    return caught.value


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error(status, err, message):
    errors = [line for line in err.strip().splitlines() if ": error: " in line]
    assert status == 2 and len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err


def run_python(script: str, *args) -> subprocess.CompletedProcess:
    """A separate process: a regression to reading through a memory map would die of
    SIGBUS there, failing the test instead of ending the test session."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,  # a guard against a hang, not a timing assertion
    )


# --- 1. CRC-32: memory-mapped members too ---------------------------------------------


def flip_a_low_bit(path, key: str) -> None:
    """Flip the lowest mantissa bit of one value of a stored member: still finite."""

    def change(content, central, local, data):
        header = 10 + get(content, data + 8, "<H")  # a version 1.0 .npy header
        content[data + header + 4 * 5] ^= 1

    edit(path, f"{key}.npy", change)


def test_a_flipped_byte_in_a_memory_mapped_member_fails_its_crc(tmp_path, capsys):
    path = tmp_path / "flipped.npz"
    save_npz(path, small_dataset())
    flip_a_low_bit(path, "diffraction")
    refused(path, r"member 'diffraction.npy' is corrupt \(bad CRC-32\)")
    with pytest.raises(DataError, match="bad CRC-32"):
        open_npz_arrays(path)
    unchecked = open_npz_arrays(path, verify=False)["diffraction"]
    assert isinstance(unchecked, np.memmap)
    assert unchecked.reshape(-1)[5] != small_dataset()["diffraction"].reshape(-1)[5]
    status, _, err = run(capsys, "extract", path, "-o", tmp_path / "out.npz", "--N", 8)
    assert_one_error(status, err, "bad CRC-32")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("method", COMPRESSED)
def test_a_compressed_member_is_checked_against_its_crc(tmp_path, method):
    path = write_zip(tmp_path / "crc.npz", small_dataset(), method)
    edit(
        path,
        "xcoords.npy",
        lambda c, central, *_: put(c, central + 16, "<I", get(c, central + 16, "<I") ^ 1),
    )
    refused(path, r"member 'xcoords.npy' is corrupt \(bad CRC-32\)")


@pytest.mark.parametrize("method", COMPRESSED)
def test_a_stream_longer_than_its_declared_size_is_refused(tmp_path, method):
    """Decompression stops at the declared size, and the stream must end there."""
    member = npy(np.arange(12.0))
    path = write_zip(tmp_path / "long.npz", {"xcoords": member + bytes(4096)}, method)

    def declare_only_the_array(content, central, local, data):
        put(content, central + 16, "<I", zlib.crc32(member))
        put(content, central + 24, "<I", len(member))

    edit(path, "xcoords.npy", declare_only_the_array)
    refused(path, f"holds more than the {len(member)} bytes", require=["xcoords"])


@pytest.mark.parametrize("method", COMPRESSED)
def test_a_stream_cut_short_is_refused(tmp_path, method):
    path = write_zip(tmp_path / "cut.npz", {"xcoords": np.arange(1000.0)}, method)
    edit(
        path,
        "xcoords.npy",
        lambda c, central, *_: put(c, central + 20, "<I", get(c, central + 20, "<I") - 3),
    )
    refused(path, "'xcoords.npy' is corrupt", require=["xcoords"])


def test_a_stream_shorter_than_its_header_declares_is_refused(tmp_path):
    member = npy(np.arange(12.0))
    path = write_zip(tmp_path / "short.npz", {"xcoords": member[:-16]}, DEFLATED)
    edit(path, "xcoords.npy", lambda c, central, *_: put(c, central + 24, "<I", len(member)))
    message = f"its data ends after {len(member) - 16} of the {len(member)} bytes"
    refused(path, message, require=["xcoords"])


# --- 2. Zip bombs and declared sizes ----------------------------------------------------


def traced_peak(function):
    """The result of `function()` or the exception it raised, and the peak of memory
    allocated meanwhile (numpy's arrays and Python's objects)."""
    tracemalloc.start()
    try:
        try:
            result = function()
        except DataError as err:
            result = err
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_members_outside_the_contract_are_listed_but_never_read(tmp_path):
    """A 64 MiB member of zeros deflated to 64 KiB (and corrupt) is not decompressed."""
    arrays = small_dataset()
    path = write_zip(tmp_path / "bomb.npz", {**arrays, "junk": np.zeros(2**23)}, DEFLATED)
    edit(
        path,
        "junk.npy",
        lambda c, central, local, data: c.__setitem__(slice(data, data + 64), bytes(range(64))),
    )
    loaded, peak = traced_peak(lambda: load_dataset(path))
    assert set(loaded) == set(arrays) and peak < 8 * 2**20, peak
    np.testing.assert_array_equal(loaded["diffraction"], arrays["diffraction"])
    refused(
        path,
        r"missing key 'obj' \(named for 'objectGuess'; the file has \[.*'junk'",
        names={"objectGuess": "obj"},
    )
    with pytest.raises(DataError, match=r"'junk\.npy' is corrupt"):
        open_npz_arrays(path)  # asked for every array, it reads the junk too


def test_an_array_larger_than_the_free_memory_is_refused_before_it_is_read(tmp_path, monkeypatch):
    arrays = {**small_dataset(), "objectGuess": np.zeros((2048, 4096), np.complex64)}
    path = write_zip(tmp_path / "bomb.npz", arrays, DEFLATED)  # 64 MiB in 64 KiB
    monkeypatch.setattr(_memory, "available_memory", lambda: 32 * 2**20)
    error, peak = traced_peak(lambda: load_dataset(path))
    assert isinstance(error, DataError) and peak < 2**20, peak
    message = str(error)
    assert "reading objectGuess.npy (64.0 MiB) and 5 smaller arrays would need" in message
    assert message.endswith("of memory, more than the 32.0 MiB available")


def test_terabytes_declared_consistently_are_refused_without_allocating(tmp_path):
    """The header and the zip directory (zip64) agree on 10**6 x 10**6 complex64 values,
    8 TB, held in a few bytes: refused, no MemoryError."""
    header = npy_header((10**6, 10**6))
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w", DEFLATED) as archive:
        for key in ("xcoords", "ycoords"):
            archive.writestr(f"{key}.npy", npy(np.arange(4.0)))
        archive.writestr("objectGuess.npy", header + bytes(4096))
        archive.getinfo("objectGuess.npy").file_size = len(header) + 8 * 10**12
    error, peak = traced_peak(lambda: load_dataset(path))
    assert isinstance(error, DataError) and peak < 2**20, peak
    assert "reading objectGuess.npy (7450.6 GiB) and 2 smaller arrays" in str(error)


@pytest.mark.parametrize("method", [STORED, DEFLATED])
@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((10**6, 10**6), r"declares 8000000000128 bytes \(\(1000000, 1000000\) complex64\)"),
        ((2**64 + 1,), "declares an impossible shape"),  # no OverflowError
        ((-1, 3), "declares an impossible shape"),
    ],
)
def test_a_header_that_disagrees_with_the_zip_directory_is_refused(
    tmp_path, method, shape, message
):
    members = {"xcoords": np.arange(4.0), "objectGuess": npy_header(shape) + bytes(64)}
    path = write_zip(tmp_path / "lies.npz", members, method)
    refused(path, message, require=["xcoords"])


# --- 3. Every failure of zipfile, zlib, bz2, lzma and numpy.lib.format ---------------


def set_bits(central_at, local_at, bits):
    def change(content, central, local, data):
        content[central + central_at] |= bits
        content[local + local_at] |= bits

    return change


def garbage(skip=0):
    def change(content, central, local, data):
        size = get(content, central + 20, "<I")
        content[data + skip : data + size] = np.random.default_rng(3).bytes(size - skip)

    return change


def method_99(content, central, local, data):
    put(content, central + 10, "<H", 99)
    put(content, local + 8, "<H", 99)


def zip_version_9_9(content, central, local, data):
    content[central + 6] = 99


def name_not_utf8(content, central, local, data):
    content[central + 9] |= 0x08  # flag bit 11: the name is UTF-8
    content[central + 46] = 0xFF


def no_local_header(content, central, local, data):
    put(content, central + 42, "<I", central)  # points at the directory


CASES = {
    # case: (method, change of the xcoords member, message, the library's exception)
    "encrypted": (DEFLATED, set_bits(8, 6, 0x1), "is encrypted", None),
    "method 99": (STORED, method_99, "uses compression method 99", None),
    "deflate": (DEFLATED, garbage(), "is corrupt", zlib.error),
    "bzip2": (BZIP2, garbage(), "is corrupt", OSError),
    "lzma": (LZMA, garbage(skip=9), "is corrupt", lzma.LZMAError),
    "lzma properties": (LZMA, garbage(), "bad LZMA properties", None),
    "zip version": (STORED, zip_version_9_9, "not a readable NPZ file", NotImplementedError),
    "name not UTF-8": (STORED, name_not_utf8, "not a readable NPZ file", UnicodeDecodeError),
    "no local header": (STORED, no_local_header, "no local file header", None),
}


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_zip_member_is_one_data_error(tmp_path, case):
    method, change, message, context = CASES[case]
    path = write_zip(tmp_path / "damaged.npz", {"xcoords": np.arange(1000.0)}, method)
    edit(path, "xcoords.npy", change)
    refused(path, message, context, require=["xcoords"])


NPY_CASES = {
    "not .npy": (b"NOTNUMPY" + bytes(100), "not a .npy array", ValueError),
    "header not a dict": (raw_npy(b"[1]\n"), "not a .npy array", ValueError),
    "bad descr": (npy_header((4,), descr="<x9"), "not a .npy array", ValueError),
    "header cut short": (
        raw_npy(b"{'descr': '<f8', 'shape': (4,\n"),  # tokenized as Python 2 text
        "not a .npy array",
        tokenize.TokenError,
    ),
    "version 3.0": (b"\x93NUMPY\x03\x00" + bytes(100), "format version", None),
    "header too long": (b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31), "more than 10000", None),
    "cut in the header": (npy(np.arange(4.0))[:30], "ends inside its header", None),
    "objects": (npy_header((2,), descr="|O") + bytes(16), "holds Python objects", None),
}


@pytest.mark.parametrize("method", [STORED, DEFLATED])
@pytest.mark.parametrize("case", NPY_CASES)
def test_a_damaged_npy_header_is_one_data_error(tmp_path, case, method):
    member, message, context = NPY_CASES[case]
    path = write_zip(tmp_path / "header.npz", {"xcoords": member}, method)
    refused(path, message, context, require=["xcoords"])


def test_a_member_named_twice_is_refused(tmp_path):
    path = tmp_path / "twice.npz"
    with pytest.warns(UserWarning, match="Duplicate name"):
        write_zip(path, {"xcoords": np.arange(3.0)})
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("xcoords.npy", npy(np.arange(5.0)))
    refused(path, "member 'xcoords.npy' appears 2 times", require=["xcoords"])


def test_running_out_of_memory_while_decompressing_is_one_line(tmp_path, monkeypatch, capsys):
    path = write_zip(tmp_path / "data.npz", small_dataset(), DEFLATED)

    class Starved:
        eof, unconsumed_tail = False, b""

        def decompress(self, data, limit):
            raise MemoryError

    monkeypatch.setattr(zlib, "decompressobj", lambda *args: Starved())
    refused(path, "member 'objectGuess.npy': not enough memory to read it")
    status, _, err = run(capsys, "extract", path, "-o", tmp_path / "out.npz", "--N", 8)
    assert_one_error(status, err, "not enough memory to read it")


def test_a_memory_error_anywhere_in_reading_is_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "data.npz"
    save_npz(path, small_dataset())

    def starve(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(data_module, "load_dataset", starve)
    status, _, err = run(capsys, "extract", path, "-o", tmp_path / "out.npz", "--N", 8)
    assert_one_error(status, err, "data.npz: not enough memory to read it")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("method", [STORED, *COMPRESSED])
def test_every_method_reads_exactly_in_blocks_of_any_size(tmp_path, monkeypatch, method):
    """Blocks of 64 bytes and compressed reads of 7: every boundary is crossed."""
    arrays = small_dataset()
    arrays["objectGuess"] = np.asfortranarray(arrays["objectGuess"].astype(np.complex128))
    arrays["diffraction"] = arrays["diffraction"].astype(np.float64)
    path = write_zip(tmp_path / "blocks.npz", arrays, method)
    monkeypatch.setattr(_npz, "_BLOCK", 64)
    monkeypatch.setattr(_npz, "_INPUT", 7)
    loaded = load_dataset(path)
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value.astype(loaded[key].dtype), err_msg=key)
    assert loaded["objectGuess"].dtype == np.complex64
    assert loaded.source_dtypes["diffraction"] == np.float64
    opened = open_npz_arrays(path)
    np.testing.assert_array_equal(opened["objectGuess"], arrays["objectGuess"])
    assert isinstance(opened["xcoords"], np.memmap) == (method == STORED)


# --- 4. Special files --------------------------------------------------------------------


def special_file(tmp_path, kind):
    path = tmp_path / f"{kind}.npz"
    if kind == "directory":
        path.mkdir()
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "link to a directory":
        (tmp_path / "folder").mkdir()
        path.symlink_to(tmp_path / "folder")
    else:
        path = "/dev/zero"
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("directory", "is a directory"),
        ("link to a directory", "is a directory"),
        ("FIFO", "is not a regular file (a FIFO)"),
        ("character device", "is not a regular file (a character device)"),
    ],
)
def test_a_special_file_is_named_and_never_opened(tmp_path, kind, message):
    if kind == "FIFO" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    if kind == "character device" and not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    path = special_file(tmp_path, kind)
    # In a separate process: opening a FIFO without a writer would block forever.
    result = run_python(
        """
        import sys
        from ptycho import cli
        sys.exit(cli.main(["extract", sys.argv[1], "-o", sys.argv[2]]))
        """,
        path,
        tmp_path / "out.npz",
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"ptycho-patches: error: {path}: {message}"
    assert not (tmp_path / "out.npz").exists()


# --- 5. A file that shrinks while it is read ------------------------------------------


def test_read_rows_equals_numpy_indexing(tmp_path):
    expected = small_dataset()["diffraction"]
    save_npz(tmp_path / "data.npz", small_dataset())
    mapped = load_dataset(tmp_path / "data.npz")["diffraction"]
    assert isinstance(mapped, np.memmap)
    cases = [[3], [0, 1, 2, 7], [[5, 5, 2], [11, -1, 0]], np.array([9, 3], np.uint8), []]
    for rows in cases:
        rows = np.asarray(rows, dtype=None if len(rows) else int)
        np.testing.assert_array_equal(read_rows(mapped, rows), expected[rows])
        np.testing.assert_array_equal(read_rows(expected, rows), expected[rows])
    for rows in ([12], [-13], [[0, 12]]):
        with pytest.raises(IndexError):
            read_rows(mapped, rows)


def test_a_file_replaced_after_loading_is_not_read_as_the_loaded_one(tmp_path):
    """`read_rows` reopens the file by name: a file renamed over it since is refused."""
    data = small_dataset()
    save_npz(tmp_path / "data.npz", data)
    mapped = load_dataset(tmp_path / "data.npz")["diffraction"]
    save_npz(tmp_path / "data.npz", {**data, "diffraction": data["diffraction"] + 7}, force=True)
    with pytest.raises(DataError, match="replaced while it was read"):
        read_rows(mapped, [1])


def test_a_file_truncated_while_it_is_read_is_one_error_not_sigbus(tmp_path):
    save_npz(tmp_path / "data.npz", small_dataset(n=2000))
    save_npz(tmp_path / "again.npz", small_dataset())
    result = run_python(
        """
        import os, sys
        from ptycho import _npz, data
        path = sys.argv[1]
        mapped = data.load_dataset(path)["diffraction"]
        os.truncate(path, mapped.offset + 100 * 8 * 8 * 4)  # 100 of its 2000 patterns
        print(data.read_rows(mapped, [5, 6]).shape)
        try:
            data.read_rows(mapped, [5, 1500])
        except data.DataError as err:
            print(err)
        # The CRC and finiteness pass reads the file too, never through the map.
        again, original = sys.argv[2], _npz.Archive.array
        def shrink_first(self, member, *args, **kwargs):
            os.truncate(again, member.start + len(member.header) + 8)
            return original(self, member, *args, **kwargs)
        _npz.Archive.array = shrink_first
        try:
            data.load_dataset(again)
        except data.DataError as err:
            print(err)
        """,
        tmp_path / "data.npz",
        tmp_path / "again.npz",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "(2, 8, 8)"
    assert lines[1].endswith(
        "data.npz: the file changed while it was read (it is now shorter than the arrays it held)"
    )
    assert lines[2].endswith(
        "again.npz: member 'objectGuess.npy': the file changed while it was read"
    )


def test_the_cli_reports_a_dataset_truncated_during_the_run(tmp_path):
    save_npz(tmp_path / "data.npz", small_dataset(n=2000))
    result = run_python(
        """
        import os, sys
        from ptycho import cli, data, ops
        path, out = sys.argv[1], sys.argv[2]
        mapped = data.load_dataset(path)["diffraction"]
        original = ops.extract_patches
        def truncate_then_extract(*args, **kwargs):  # after the object has been read
            os.truncate(path, mapped.offset + 100 * 8 * 8 * 4)
            return original(*args, **kwargs)
        ops.extract_patches = truncate_then_extract
        sys.exit(cli.main(["extract", path, "-o", out, "--N", "8", "--gridsize", "2"]))
        """,
        tmp_path / "data.npz",
        tmp_path / "out.npz",
    )
    assert_one_error(result.returncode, result.stderr, "the file changed while it was read")
    assert not (tmp_path / "out.npz").exists()


# --- 6. Values beyond the contract's dtype ---------------------------------------------


@pytest.mark.parametrize("method", [STORED, DEFLATED])
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "objectGuess",
            np.full((40, 50), 1e300, np.complex128),
            "holds values beyond the complex64 range",
        ),
        ("probeGuess", np.full((8, 8), 1e300j), "holds values beyond the complex64 range"),
        ("diffraction", np.full((12, 8, 8), -1e300), "holds values beyond the float32 range"),
        ("Y", np.full((12, 8, 8), 1e39 + 0j), "holds values beyond the complex64 range"),
        ("objectGuess", np.full((40, 50), np.nan, np.complex64), "holds NaN or infinite"),
        ("diffraction", np.full((12, 8, 8), np.inf), "holds NaN or infinite"),
    ],
)
def test_values_are_checked_after_the_conversion_to_the_contract(
    tmp_path, method, key, value, message
):
    path = write_zip(tmp_path / "values.npz", {**small_dataset(), key: value}, method)
    refused(path, f"key '{key}' {message}")


def test_the_cli_refuses_values_beyond_float32_in_one_line(tmp_path, capsys):
    huge = {**small_dataset(), "objectGuess": np.full((40, 50), 1e300, np.complex128)}
    save_npz(tmp_path / "huge.npz", huge)
    status, _, err = run(capsys, "extract", tmp_path / "huge.npz", "-o", tmp_path / "o.npz")
    assert_one_error(status, err, "key 'objectGuess' holds values beyond the complex64 range")
    far = {**small_dataset(), "xcoords": np.full(12, 1e39)}  # finite in float64 only
    save_npz(tmp_path / "far.npz", far)
    status, _, err = run(capsys, "extract", tmp_path / "far.npz", "-o", tmp_path / "o.npz")
    assert_one_error(status, err, "xcoords")
    assert not (tmp_path / "o.npz").exists()


# --- 7. The whole run against the free memory ------------------------------------------


def never(*args, **kwargs):
    raise AssertionError("called before the run was checked")


def test_the_whole_run_is_refused_before_any_array_is_read(tmp_path, capsys, monkeypatch):
    from ptycho import grouping

    save_npz(tmp_path / "data.npz", small_dataset())
    monkeypatch.setattr(grouping, "grouping_bytes", lambda *args: 2**60)
    monkeypatch.setattr(grouping, "group_positions", never)
    monkeypatch.setattr(data_module, "load_dataset", never)
    status, _, err = run(capsys, "extract", tmp_path / "data.npz", "-o", tmp_path / "o.npz")
    assert_one_error(status, err, "extracting 12 groups of 1 patch of 64 x 64 would need")
    assert "GiB of memory available" in err
    assert os.listdir(tmp_path) == ["data.npz"]


def test_the_whole_run_counts_more_than_one_chunk(tmp_path, capsys, monkeypatch):
    """40 KiB free: one chunk of patches (37 KiB with its object table) would fit, the
    run (with TensorFlow's copy of the object, the patches' copy and X) does not."""
    save_npz(tmp_path / "data.npz", small_dataset())
    argv = ["extract", tmp_path / "data.npz", "-o", tmp_path / "o.npz", "--N", 8]
    monkeypatch.setattr(_memory, "available_memory", lambda: 40 * 2**10)
    status, _, err = run(capsys, *argv)
    assert_one_error(status, err, "extracting 12 groups of 1 patch of 8 x 8 would need")
    monkeypatch.setattr(_memory, "available_memory", lambda: 2**30)
    status, _, err = run(capsys, *argv)
    assert status == 0, err


def test_the_whole_run_counts_the_compressed_input_it_will_hold(tmp_path, capsys, monkeypatch):
    """A 256 MiB object deflated to 256 KiB, with 400 MiB free: it would be read (and fit),
    but with TensorFlow's copy of it and its table the run would not."""
    arrays = {**small_dataset(), "objectGuess": np.zeros((4096, 8192), np.complex64)}
    write_zip(tmp_path / "data.npz", arrays, DEFLATED)
    monkeypatch.setattr(_memory, "available_memory", lambda: 400 * 2**20)
    monkeypatch.setattr(data_module, "load_dataset", never)
    status, _, err = run(capsys, "extract", tmp_path / "data.npz", "-o", tmp_path / "o.npz")
    message = "extracting 12 groups of 1 patch of 64 x 64 with its 0.3 GiB of input arrays"
    assert_one_error(status, err, message)
    assert os.listdir(tmp_path) == ["data.npz"]
