"""Hostile inputs for the fuzz harness, each target checking its own outcome.

* `npz_members`: dataset files built to break the reader: flipped bytes in any member,
  compression bombs, encryption flags, unknown compression methods, absurd shapes,
  lying size fields, truncation. A file that loads must give back exactly the arrays
  written; one that does not must raise `DataError`.
* `special_paths`: FIFOs, sockets, directories, device nodes and symbolic links given to
  `ptycho-patches` as input or output, with and without `--force`. None is opened,
  replaced or changed; the run ends with one line and exit 2.
* `signals`: a catchable termination signal delivered while `ptycho-patches` writes.
  The run ends with one line, exit 128 + signal, and nothing is left in the folder.
* `extreme_values`: objects and patches near the float maximum, checkerboards of +-a,
  far positions. Output is finite wherever the true result is, and bilinear patches
  match the float64 oracle.
* `graph_nan`: non-finite positions inside `tf.function`, `jit_compile=True` and a
  `tf.data` map. Graphs raise `InvalidArgumentError` naming the positions; compiled
  functions, which cannot raise, give all-NaN patches there and the eager result
  elsewhere.

Each target returns an outcome label; any other outcome raises `AssertionError`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import signal
import socket
import stat
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np

PROG = "ptycho-patches"


# --- NPZ files -------------------------------------------------------------------------


def _dataset(rng) -> dict:
    n = 6
    obj = rng.standard_normal((12, 12)) + 1j * rng.standard_normal((12, 12))
    arrays = {
        "objectGuess": obj.astype(np.complex64),
        "xcoords": rng.uniform(2, 9, n),
        "ycoords": rng.uniform(2, 9, n),
    }
    if rng.random() < 0.5:
        arrays["diffraction"] = rng.random((n, 4, 4)).astype(np.float32)
    if rng.random() < 0.5:
        arrays["other"] = rng.standard_normal(int(rng.integers(1, 300)))  # not in the contract
    return arrays


METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _write_zip(path: Path, members: dict, rng) -> None:
    """`members` maps a name to `.npy` bytes; each member gets a random compression."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(f"{name}.npy", payload, compress_type=int(rng.choice(METHODS)))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npy_header(shape, descr="<c8") -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


@functools.cache
def _bomb_member() -> bytes:
    """A deflated `.npy` of 64 MiB of zeros declared (4096, 2048) complex64: 65 KiB."""
    payload = _npy_header((4096, 2048)) + bytes(4096 * 2048 * 8)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("objectGuess.npy", payload)
    return buffer.getvalue()


def _local_headers(content: bytes):
    """(offset of the local header, offset of the data, compressed size) of each member."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        infos = archive.infolist()
    for info in infos:
        at = info.header_offset
        name_length, extra_length = struct.unpack("<HH", content[at + 26 : at + 30])
        yield info, at, at + 30 + name_length + extra_length


def _member(content, key: str):
    return next(h for h in _local_headers(bytes(content)) if h[0].filename == f"{key}.npy")


def _find_central(content: bytes, name: str) -> int:
    start = content.rindex(b"PK\x05\x06")
    (directory,) = struct.unpack("<I", content[start + 16 : start + 20])
    at = directory
    while content[at : at + 4] == b"PK\x01\x02":
        name_length, extra_length, comment_length = struct.unpack(
            "<HHH", content[at + 28 : at + 34]
        )
        if content[at + 46 : at + 46 + name_length].decode() == name:
            return at
        at += 46 + name_length + extra_length + comment_length
    raise KeyError(name)


def npz_members(rng, load_dataset, DataError, available_memory_patch):
    arrays = _dataset(rng)
    members = {key: _npy(value) for key, value in arrays.items()}
    mutation = str(
        rng.choice(["none", "flip", "flip", "bomb", "encrypt", "method", "shape", "sizes", "cut"])
    )
    target = str(rng.choice(list(members)))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.npz"
        if mutation == "shape":  # a header declaring 2**64 + 1 elements, or 10**6 x 10**6
            shape = [(2**64 + 1,), (10**6, 10**6), (-1, 3)][int(rng.integers(3))]
            members[target] = _npy_header(shape) + b"\0" * 64
        _write_zip(path, members, rng)
        content = bytearray(path.read_bytes())
        if mutation == "flip":
            headers = {
                info.filename[:-4]: (info, data) for info, _, data in _local_headers(content)
            }
            info, data = headers[target]
            if info.compress_size:
                content[data + int(rng.integers(info.compress_size))] ^= 1 << int(rng.integers(8))
        elif mutation == "bomb":
            content = bytearray(_bomb_member())
            target = "objectGuess"
        elif mutation in ("encrypt", "method", "sizes"):
            at = _find_central(bytes(content), f"{target}.npy")
            local = next(
                h for info, h, _ in _local_headers(content) if info.filename == f"{target}.npy"
            )
            if mutation == "encrypt":
                for where in (at + 8, local + 6):
                    content[where] |= 1
            elif mutation == "method":
                for where in (at + 10, local + 8):
                    content[where : where + 2] = struct.pack("<H", 99)
            else:  # the declared uncompressed size lies
                size = int(rng.choice([0, 1, 2**31, 2**32 - 1]))
                for where in (at + 24, local + 22):
                    content[where : where + 4] = struct.pack("<I", size)
        elif mutation == "cut":
            content = content[: int(rng.integers(len(content)))]
        path.write_bytes(bytes(content))
        limit = 32 * 2**20 if mutation == "bomb" else None
        try:
            with available_memory_patch(limit):
                data = load_dataset(path)
        except DataError as err:
            if not str(err).strip() or "\n" in str(err).strip():
                raise AssertionError(f"not one line: {err!r}") from None
            return "DataError"
        # A file that loads, damaged or not, must give back exactly what was written (a
        # flipped bit in a compressed stream's own header can be harmless; in data, never).
        if mutation == "bomb":
            raise AssertionError("a bomb beyond the free memory was loaded")
        for key in ("objectGuess", "xcoords", "ycoords", "diffraction"):
            if key in arrays:
                np.testing.assert_array_equal(data[key], arrays[key], err_msg=key)
        return "loaded" if mutation == "none" else "loaded exactly"


# --- special files as paths ----------------------------------------------------------


def _kind(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    for name, test in (
        ("link", stat.S_ISLNK),
        ("fifo", stat.S_ISFIFO),
        ("socket", stat.S_ISSOCK),
        ("dir", stat.S_ISDIR),
        ("char", stat.S_ISCHR),
        ("file", stat.S_ISREG),
    ):
        if test(mode):
            return name
    return "other"


def _make(kind: str, path: Path, sockets: list) -> Path:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        sockets.append(server)
    elif kind == "file":
        path.write_bytes(b"keep")
        path.chmod(0o600)
    elif kind == "link-file":
        (path.parent / f"{path.name}.target").write_bytes(b"keep")
        path.symlink_to(path.parent / f"{path.name}.target")
    elif kind == "link-fifo":
        os.mkfifo(path.parent / f"{path.name}.target")
        path.symlink_to(path.parent / f"{path.name}.target")
    elif kind == "link-null":
        path.symlink_to("/dev/null")
    elif kind == "dangling":
        path.symlink_to(path.parent / "nowhere")
    elif kind.startswith("/dev/"):
        return Path(kind)
    return path


def _cli(argv) -> tuple[int, str]:
    from ptycho import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = cli.main([str(a) for a in argv])
    return status, err.getvalue()


def _one_line(status: int, text: str) -> None:
    lines = [line for line in text.strip().splitlines() if not line.startswith(f"{PROG}: warning")]
    if "Traceback" in text or len(lines) != 1 or not lines[0].startswith(f"{PROG}: "):
        raise AssertionError(f"status {status}, not one line: {text!r}")


def special_paths(rng, dataset: Path):
    kinds = ["fifo", "dir", "socket", "link-fifo", "link-null", "dangling"]
    side = str(rng.choice(["input", "output"]))
    if side == "input":
        kinds += ["/dev/null", "/dev/zero"]
    else:  # never a device node as the output: a regression would replace it for good
        kinds += ["file", "link-file", "missing"]
    kind = str(rng.choice(kinds))
    force = bool(rng.random() < 0.5)
    sockets: list = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        special = _make(kind, folder / "special", sockets)
        before = {p.name: _kind(p) for p in folder.iterdir()}
        device = os.stat(special) if kind.startswith("/dev/") else None
        source, output = (special, folder / "out.npz") if side == "input" else (dataset, special)
        argv = ["extract", source, "-o", output, "--N", "4"] + (["--force"] if force else [])
        try:
            status, text = _cli(argv)
        finally:
            for server in sockets:
                server.close()
        replaceable = kind == "missing" or (kind == "file" and force)
        expected = 0 if side == "output" and replaceable else 2
        if status != expected:
            raise AssertionError(f"{side} {kind} force={force}: status {status}: {text!r}")
        if status == 2:
            _one_line(status, text)
        after = {p.name: _kind(p) for p in folder.iterdir() if p.name != "out.npz"}
        if kind == "missing":
            after.pop("special", None)
        if status == 0 and kind == "file":
            if (folder / "special").stat().st_mode & 0o777 != 0o600:
                raise AssertionError("--force did not keep the replaced file's permissions")
            after["special"] = "file"
        if after != before:
            raise AssertionError(f"{side} {kind}: the folder changed from {before} to {after}")
        if kind == "file" and not force and (folder / "special").read_bytes() != b"keep":
            raise AssertionError("an existing file was replaced without --force")
        if device is not None:
            now = os.stat(special)
            if (now.st_mode, now.st_rdev) != (device.st_mode, device.st_rdev):
                raise AssertionError(f"{special} changed")
        return f"{side} {'refused' if status else 'written'}"


# --- signals during a write --------------------------------------------------------------


def _signals() -> list[int]:
    """The signals a run ends on, less those Python ignores (SIGXFSZ: the write fails)."""
    from ptycho.cli import TERMINATING_SIGNALS

    return [s for s in TERMINATING_SIGNALS if signal.getsignal(s) != signal.SIG_IGN]


def signals(rng, dataset: Path):
    import ptycho.ops

    signum = int(rng.choice(_signals()))
    after = int(rng.integers(1, 4))  # on the first, second or third chunk of patches
    original = ptycho.ops.extract_patches
    calls = 0

    def extract_then_signal(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == after:
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        argv = ["extract", dataset, "-o", folder / "out.npz", "--N", "32", "--gridsize", "2"]
        argv += ["--memory-budget-mb", "1"]  # 32 groups a chunk: 4 chunks
        ptycho.ops.extract_patches = extract_then_signal
        try:
            status, text = _cli(argv)
        finally:
            ptycho.ops.extract_patches = original
        if status != 128 + signum:
            raise AssertionError(f"signal {signum}: status {status}: {text!r}")
        _one_line(status, text)
        if list(folder.iterdir()):
            raise AssertionError(f"left behind: {[p.name for p in folder.iterdir()]}")
        return f"exit {status}"


# --- extreme magnitudes ---------------------------------------------------------------


def extreme_values(rng):
    import tensorflow as tf

    from ptycho import extract_patches, reassemble_patches
    from ptycho.reference import oracle_patches

    dtype = rng.choice([np.complex64, np.complex128, np.float32, np.float64])
    finfo = np.finfo(dtype)
    interpolation = str(rng.choice(["bilinear", "nearest", "fourier"]))
    # Fourier's band-limited shift rings: keep its input a few binades below the maximum.
    top = finfo.max / (64 if interpolation == "fourier" else 1)
    scale = float(min(top, 10.0 ** rng.uniform(-30, np.log10(finfo.max))))
    side = int(rng.choice([5, 9]))
    if rng.random() < 0.5:
        base = np.where(np.add.outer(np.arange(side), np.arange(side)) % 2, 1.0, -1.0)
    else:
        base = rng.uniform(-1, 1, (side, side))
    obj = (base * scale).astype(dtype)
    if np.dtype(dtype).kind == "c":
        obj = obj + (1j * rng.uniform(-1, 1, (side, side)) * scale).astype(dtype)
    N = int(rng.choice([2, 3]))
    positions = rng.uniform(-3, side + 2, (4, 2))
    positions[0] = np.round(positions[0])
    if rng.random() < 0.3:
        positions[1] = rng.choice([1e30, -1e30, 3e37])
    positions = positions.astype(np.float32)
    what = str(rng.choice(["extract", "reassemble"]))
    if what == "extract":
        out = extract_patches(obj, positions, N, interpolation).numpy()
        if not np.isfinite(out).all():
            raise AssertionError(f"non-finite patches from |obj| <= {scale:.3g} ({dtype.__name__})")
        if interpolation == "bilinear":
            wide = obj.astype(np.complex128)
            expected = np.stack(
                [oracle_patches(wide / scale, p[None], N)[0] * scale for p in positions]
            )
            error = np.abs(out[..., 0] - expected).max() / np.abs(obj).max()
            if error > (1e-12 if finfo.dtype == np.float64 else 1e-6):
                raise AssertionError(f"bilinear error {error:.3g} at |obj| {scale:.3g}")
        return "finite"
    patches = np.broadcast_to(obj[:1, :1], (4, N, N)).astype(dtype)[..., None]
    canvas = reassemble_patches(
        tf.constant(patches), positions, (side, side), True, interpolation
    ).numpy()
    if not np.isfinite(canvas).all():
        raise AssertionError(f"non-finite canvas from patches of {scale:.3g} ({dtype.__name__})")
    return "finite"


# --- non-finite positions in graphs -----------------------------------------------------


@functools.cache
def _graph_functions(mode: str, interpolation: str, N: int):
    import tensorflow as tf

    from ptycho import extract_patches

    def call(obj, positions):
        return extract_patches(obj, positions, N, interpolation)

    if mode == "tf.function":
        return tf.function(call)
    if mode == "jit":
        return tf.function(call, jit_compile=True)

    def through_data(obj, positions):
        dataset = tf.data.Dataset.from_tensor_slices(positions).batch(len(positions))
        return next(iter(dataset.map(lambda batch: call(obj, batch))))

    return through_data


def graph_nan(rng):
    import tensorflow as tf

    from ptycho import extract_patches

    mode = str(rng.choice(["tf.function", "jit", "tf.data"]))
    interpolation = str(rng.choice(["bilinear", "nearest", "fourier"]))
    N = 3
    obj = (rng.standard_normal((9, 9)) + 1j * rng.standard_normal((9, 9))).astype(np.complex64)
    positions = rng.uniform(0, 8, (5, 2)).astype(np.float32)
    bad = rng.random(5) < 0.4
    bad[int(rng.integers(5))] = True
    positions[bad, rng.integers(0, 2, bad.sum())] = rng.choice([np.nan, np.inf, -np.inf], bad.sum())
    run = _graph_functions(mode, interpolation, N)
    try:
        out = run(tf.constant(obj), tf.constant(positions)).numpy()
    except tf.errors.InvalidArgumentError as err:
        if mode == "jit" or "positions" not in str(err):
            raise AssertionError(f"{mode}: {str(err)[:200]}") from None
        return "InvalidArgumentError"
    if mode != "jit":
        raise AssertionError(f"{mode}: non-finite positions gave a result")
    if not np.isnan(out[bad]).all():
        raise AssertionError(f"{interpolation}: a non-finite position gave a non-NaN patch")
    good = extract_patches(obj, positions[~bad], N, interpolation).numpy()
    np.testing.assert_allclose(out[~bad], good, rtol=1e-6, atol=1e-6 * np.abs(obj).max())
    return "NaN patches"
