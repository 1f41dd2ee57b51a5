"""NPZ files: read as if hostile, and written member by member (private to `ptycho.data`).

Only the members asked for are read; the others are only listed. The `.npy` header of each
member is read first (of a compressed member, only its header is decompressed): the size it
declares must agree with the zip directory, and the arrays that will be held in memory must
fit in the free memory (:func:`check_read_memory`), before any data is read. Decompression
never produces more than the declared size, and every member read is checked against its
CRC-32, memory-mapped ones too, in one pass that can check its values as well. Whatever a
damaged file makes `zipfile`, `zlib`, `bz2`, `lzma` or `numpy.lib.format` raise becomes a
:class:`DataError` of one line.

Arrays stored uncompressed are memory-mapped straight from the file; :func:`read_rows`
reads their rows with file reads, so that a file truncated meanwhile gives a `DataError`
rather than SIGBUS, and one replaced meanwhile is refused. Files are written uncompressed,
atomically (:func:`save_npz`) or member by member and in chunks (:class:`NpzWriter`).
"""

from __future__ import annotations

import contextlib
import io
import math
import mmap
import os
import stat
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptycho import _memory
from ptycho._files import atomic_path

try:
    import lzma
except ImportError:  # Python built without liblzma: its members are refused
    lzma = None

__all__ = [
    "Archive",
    "DataError",
    "Member",
    "NpzWriter",
    "check_read_memory",
    "is_held",
    "open_npz_arrays",
    "read_rows",
    "save_npz",
]

_BLOCK = 2**22  # bytes of a member read, checked and converted at a time
_INPUT = 2**20  # compressed bytes read at a time
_MAX_HEADER = 10_000  # the longest .npy header read, as in numpy.lib.format
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip member's local file header
_ENCRYPTED, _LZMA_END_MARKER, _PATCHED, _STRONG_ENCRYPTION = 0x1, 0x2, 0x20, 0x40
_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
# What zipfile, zlib, bz2 (OSError, EOFError, ValueError), lzma and numpy.lib.format raise
# on malformed input. Each is caught only around a call that parses or decompresses the
# file; MemoryError and OSError are handled apart.
_MALFORMED = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    ValueError,  # with UnicodeDecodeError: a name that is not UTF-8
    NotImplementedError,
    RuntimeError,  # with RecursionError
    struct.error,
    OverflowError,
    IndexError,
    KeyError,
    TypeError,
    SyntaxError,
    tokenize.TokenError,  # numpy re-reads a bad header as Python 2 text
    *((lzma.LZMAError,) if lzma else ()),
)
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class DataError(ValueError):
    """A dataset file that is missing, unreadable, or breaks the contract."""


def open_npz_arrays(path, keys: Iterable[str] | None = None, verify: bool = True) -> dict:
    """Arrays of an NPZ file: memory-mapped when stored uncompressed, else read once.

    Each member read is checked as :func:`ptycho.data.load_dataset` checks them (its header, sizes,
    CRC-32, and the memory it needs), but its values are not.

    Args:
        path: an `.npz` file.
        keys: the names of the arrays to read (the file's member names without `.npy`);
            those the file lacks are left out. By default every array is read.
        verify: whether memory-mapped arrays are checked against their CRC-32 too, which
            reads each once. Compressed arrays are always checked, as they are read.

    Returns:
        A dict of arrays by name; those stored uncompressed are `numpy.memmap` arrays. The
        file must not be truncated while they are in use (see :func:`ptycho.data.load_dataset`).

    Raises:
        DataError: the file is missing, unreadable, corrupt or holds no arrays.
    """
    with Archive(path) as archive:
        if not archive.infos:
            raise DataError(f"{archive.path}: the file holds no arrays")
        wanted = archive.names if keys is None else dict.fromkeys(keys)
        members = {key: archive.member(key) for key in wanted if key in archive.infos}
        check_read_memory(archive.path, [(member, member.dtype) for member in members.values()])
        return {key: archive.array(member, verify=verify) for key, member in members.items()}


def read_rows(array: np.ndarray, rows) -> np.ndarray:
    """`array[rows]` for integer `rows`, read with file reads when `array` is memory-mapped.

    A memory map reads its file when it is indexed, and if the file has been truncated
    meanwhile the process is killed (SIGBUS). The rows of an array memory-mapped in C order
    by :func:`open_npz_arrays` or :func:`ptycho.data.load_dataset` are read here with
    ordinary reads, contiguous rows together and in increasing order, so that a file that
    shrank gives a :class:`DataError`. Other arrays are indexed as usual.
    """
    rows = np.asarray(rows)
    mapped = (
        isinstance(array, np.memmap)
        and isinstance(array.base, mmap.mmap)  # the map itself, not a view of it
        and array.filename is not None
        and array.ndim >= 1
        and array.flags.c_contiguous
        and rows.dtype.kind in "iu"
    )
    if not mapped:
        return array[rows]
    length, flat = len(array), rows.reshape(-1)
    if flat.size and (int(flat.min()) < -length or int(flat.max()) >= length):
        return array[rows]  # numpy raises its IndexError
    flat = flat.astype(np.int64)
    flat[flat < 0] += length
    unique, inverse = np.unique(flat, return_inverse=True)
    shape = array.shape[1:]
    out = np.empty((unique.size, *shape), array.dtype)
    if not unique.size:
        return out.reshape(*rows.shape, *shape)
    row_bytes = array.dtype.itemsize * math.prod(shape)
    view = memoryview(out.reshape(-1).view(np.uint8))
    runs = np.flatnonzero(np.diff(unique) != 1) + 1  # where contiguous runs of rows start
    with _open_input(Path(array.filename)) as handle:
        status = os.fstat(handle.fileno())
        if getattr(array, "file_identity", None) not in (None, (status.st_dev, status.st_ino)):
            raise DataError(f"{array.filename}: the file was replaced while it was read")
        for first, end in zip(np.r_[0, runs], np.r_[runs, unique.size], strict=True):
            span = slice(int(first) * row_bytes, int(end) * row_bytes)
            offset = array.offset + int(unique[first]) * row_bytes
            if _read_into(handle, view[span], offset) < span.stop - span.start:
                raise DataError(
                    f"{array.filename}: the file changed while it was read "
                    "(it is now shorter than the arrays it held)"
                )
    if unique.size == flat.size and (unique == flat).all():
        return out.reshape(*rows.shape, *shape)
    return out[inverse].reshape(*rows.shape, *shape)


def check_read_memory(path: Path, reads: list) -> None:
    """Refuse, before any data is read, arrays that would not fit in the free memory.

    `reads` holds `(member, dtype)` pairs. A member is held in memory when it is
    compressed or converted to another dtype; memory-mapped ones are not counted. A
    block of the streaming pass (its data, and its finiteness mask) is added.
    """
    held = sorted(
        ((m.count * dtype.itemsize, m.name) for m, dtype in reads if is_held(m, dtype)),
        reverse=True,
    )
    need = sum(nbytes for nbytes, _ in held)
    need += 2 * min(_BLOCK, max((m.nbytes for m, _ in reads), default=0))
    available = _memory.available_memory()
    if available is not None and need > available:
        what = "a block of its arrays"
        if held:
            what = f"{held[0][1]} ({_size(held[0][0])})"
            what += f" and {len(held) - 1} smaller arrays" if len(held) > 1 else ""
        raise DataError(
            f"{path}: reading {what} would need {_size(need)} of memory, more than the "
            f"{_size(available)} available"
        )


def is_held(member: Member, dtype: np.dtype) -> bool:
    """Whether `member` read as `dtype` is held in memory rather than memory-mapped."""
    return member.inflate is not None or dtype != member.dtype


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


@dataclass
class Member:
    """A member whose `.npy` header has been read, ready for its data to be read."""

    name: str  # the member's name in the zip file, `KEY.npy`
    where: str  # "PATH: member 'KEY.npy'", for messages
    info: zipfile.ZipInfo
    start: int  # the file offset of the member's (stored or compressed) bytes
    header: bytes  # the .npy header, covered by the CRC-32 with the data
    shape: tuple
    fortran: bool
    dtype: np.dtype
    inflate: _Inflate | None  # a compressed member's data, after the header

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


class Archive:
    """An NPZ file open for reading: the names of its arrays, and each read on request."""

    def __init__(self, path):
        self.path = Path(path)
        self.handle = _open_input(self.path)
        try:
            self.size = os.fstat(self.handle.fileno()).st_size
            with _faults(str(self.path), ": not a readable NPZ file"):
                self.zip = zipfile.ZipFile(self.handle)
        except BaseException:
            self.handle.close()
            raise
        self.infos: dict[str, list] = {}  # the members by array name, in file order
        for info in self.zip.infolist():
            if info.filename.endswith(".npy"):
                self.infos.setdefault(info.filename[: -len(".npy")], []).append(info)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()
        self.handle.close()

    @property
    def names(self) -> list:
        return sorted(self.infos)

    def member(self, key: str) -> Member:
        """Read the headers of member `KEY.npy` and check what they declare."""
        infos = self.infos[key]
        info = infos[0]
        where = f"{self.path}: member '{info.filename}'"
        if len(infos) > 1:
            raise DataError(f"{where} appears {len(infos)} times")
        method = info.compress_type
        if info.flag_bits & (_ENCRYPTED | _STRONG_ENCRYPTION):
            raise DataError(f"{where} is encrypted")
        if method not in _METHODS:
            raise DataError(
                f"{where} uses compression method {method}, which is not supported "
                f"(methods {', '.join(f'{n} ({name})' for n, name in _METHODS.items())} are)"
            )
        if method == zipfile.ZIP_LZMA and lzma is None:
            raise DataError(f"{where} is compressed with lzma, which this Python lacks")
        if info.flag_bits & _PATCHED:
            raise DataError(f"{where} holds patched data, which is not supported")
        local = b""
        if info.header_offset + _LOCAL_HEADER.size <= self.size:
            local = _read_at(self.handle, info.header_offset, _LOCAL_HEADER.size)
        if len(local) < _LOCAL_HEADER.size or local[:4] != b"PK\x03\x04":
            raise DataError(f"{where} is corrupt (no local file header where the directory says)")
        _, _, flags, local_method, *_, name_length, extra_length = _LOCAL_HEADER.unpack(local)
        if flags & (_ENCRYPTED | _STRONG_ENCRYPTION):
            raise DataError(f"{where} is encrypted")
        if local_method != method:
            raise DataError(
                f"{where} is corrupt (compression method {local_method} in its local header, "
                f"{method} in the zip directory)"
            )
        start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        if start + info.compress_size > self.size:
            raise DataError(f"{where} is truncated (the file ends before its data does)")
        if method == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise DataError(
                f"{where} is corrupt (stored, but its sizes in the zip directory differ: "
                f"{info.compress_size} and {info.file_size})"
            )
        inflate = None
        if method == zipfile.ZIP_STORED:
            position = start

            def read(n: int) -> bytes:
                nonlocal position
                data = _read_at(self.handle, position, n)
                position += n
                if len(data) < n:
                    raise DataError(f"{where}: the file changed while it was read")
                return data

        else:
            inflate = _Inflate(self.handle, where, info, start)
            read = inflate.read
        header, (shape, fortran, dtype) = _npy_header(read, info.file_size, where)
        if dtype.hasobject:
            raise DataError(f"{where} holds Python objects, which are never read")
        if dtype.subdtype is not None:
            raise DataError(f"{where} declares a sub-array dtype {dtype}, which is not read")
        if any(n < 0 or n >= 2**63 for n in shape) or math.prod(shape) >= 2**63:
            raise DataError(f"{where} declares an impossible shape {shape}")
        declared = len(header) + math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        if declared != info.file_size:
            raise DataError(
                f"{where} is corrupt: its .npy header declares {declared} bytes ({shape} "
                f"{dtype}), the zip directory {info.file_size}"
            )
        return Member(info.filename, where, info, start, header, shape, fortran, dtype, inflate)

    def array(self, member: Member, dtype=None, key: str | None = None, verify: bool = True):
        """The member's array, converted to `dtype`, after one pass over its data.

        The pass checks the CRC-32 and, when `key` is given, that the converted values are
        finite (a failure names `key`). A member stored in `dtype` is memory-mapped: the
        pass then only checks (and is skipped when neither `verify` nor `key` asks for it).
        """
        dtype = member.dtype if dtype is None else np.dtype(dtype)
        mapped = member.inflate is None and dtype == member.dtype
        if mapped and not verify and key is None:
            return self._map(member)
        flat = None if mapped else np.empty(member.count, dtype)
        check = key is not None and dtype.kind in "fc"
        problem, done = None, 0
        with np.errstate(over="ignore", invalid="ignore"):
            for block in self._blocks(member):
                values = np.frombuffer(block, member.dtype)
                converted = values
                if flat is not None:
                    converted = flat[done : done + values.size]
                    np.copyto(converted, values, casting="unsafe")
                    done += values.size
                if check and problem is None and not _all_finite(converted):
                    problem = (
                        "holds NaN or infinite values"
                        if converted is values or not _all_finite(values)
                        else f"holds values beyond the {dtype} range"
                    )
        if problem:  # reported once the CRC-32 has shown that the data is intact
            raise DataError(f"{self.path}: key '{key}' {problem}")
        if flat is None:
            return self._map(member)
        return flat.reshape(member.shape, order="F" if member.fortran else "C")

    def _blocks(self, member: Member) -> Iterator[memoryview]:
        """The member's data in blocks of whole items, read once with file reads (never
        through a memory map). Its CRC-32 and, compressed, the end of its stream are
        checked after the last block."""
        itemsize = max(member.dtype.itemsize, 1)
        block = max(itemsize, _BLOCK // itemsize * itemsize)
        left = member.nbytes
        crc = zlib.crc32(member.header)
        if member.inflate is None:
            position = member.start + len(member.header)
            buffer = memoryview(bytearray(min(block, left)))
            while left:
                chunk = buffer[: min(block, left)]
                if _read_into(self.handle, chunk, position) < len(chunk):
                    raise DataError(f"{member.where}: the file changed while it was read")
                crc = zlib.crc32(chunk, crc)
                yield chunk
                position += len(chunk)
                left -= len(chunk)
        else:
            while left:
                data = member.inflate.read(min(block, left))
                crc = zlib.crc32(data, crc)
                yield memoryview(data)
                left -= len(data)
            member.inflate.finish()
        if crc != member.info.CRC:
            raise DataError(f"{member.where} is corrupt (bad CRC-32)")

    def _map(self, member: Member) -> np.ndarray:
        order = "F" if member.fortran else "C"
        if member.nbytes == 0:
            return np.empty(member.shape, member.dtype, order=order)
        offset = member.start + len(member.header)
        shape, dtype = member.shape, member.dtype
        mapped = np.memmap(
            self.handle, dtype=dtype, mode="r", offset=offset, shape=shape, order=order
        )
        status = os.fstat(self.handle.fileno())
        mapped.file_identity = (status.st_dev, status.st_ino)  # checked by `read_rows`
        return mapped


class _Inflate:
    """The uncompressed bytes of a compressed member, in order, never more than declared."""

    def __init__(self, handle, where: str, info: zipfile.ZipInfo, start: int):
        self.handle, self.where, self.info = handle, where, info
        self.position, self.left = start, info.compress_size  # compressed bytes not yet read
        self.produced = 0
        self.deflate = info.compress_type == zipfile.ZIP_DEFLATED
        with _faults(where, " is corrupt"):
            if self.deflate:
                self.engine = zlib.decompressobj(-zlib.MAX_WBITS)
            elif info.compress_type == zipfile.ZIP_BZIP2:
                import bz2

                self.engine = bz2.BZ2Decompressor()
            else:
                self.engine = self._lzma()

    def _lzma(self):
        # The zip format's LZMA header: the SDK version (2 bytes), the size of the
        # properties (2 bytes), then the properties of a raw LZMA1 stream.
        head = self._input(4)
        props = self._input(int.from_bytes(head[2:4], "little"))
        if len(head) < 4 or len(props) != 5 or props[0] >= 9 * 5 * 5:
            raise DataError(f"{self.where} is corrupt (bad LZMA properties)")
        # A dictionary larger than the member is never used: a hostile size (up to 4 GiB)
        # must not be allocated.
        size = min(int.from_bytes(props[1:], "little"), max(self.info.file_size, 4096))
        lc, lp, pb = props[0] % 9, props[0] // 9 % 5, props[0] // 45
        options = {"id": lzma.FILTER_LZMA1, "dict_size": size, "lc": lc, "lp": lp, "pb": pb}
        return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[options])

    def _input(self, n: int | None = None) -> bytes:
        n = min(_INPUT if n is None else n, self.left)
        data = _read_at(self.handle, self.position, n)
        if len(data) < n:
            raise DataError(f"{self.where}: the file changed while it was read")
        self.position += n
        self.left -= n
        return data

    def _step(self, limit: int) -> bytes:
        """Up to `limit` more bytes; empty at the end of the stream or of its data."""
        engine = self.engine
        with _faults(self.where, " is corrupt"):
            while not engine.eof:
                if self.deflate:
                    data = engine.unconsumed_tail or self._input()
                else:
                    data = self._input() if engine.needs_input else b""
                out = engine.decompress(data, limit)
                if out:
                    return out
                # Nothing came of no input: the end of the data, unless bz2 or lzma (whose
                # `needs_input` is False after any output cut at `limit`) now asks for more.
                if not data and (self.deflate or not engine.needs_input or not self.left):
                    break
        return b""

    def read(self, n: int) -> bytes:
        """Exactly `n` more bytes."""
        parts = []
        while n > 0:
            out = self._step(n)
            if not out:
                raise DataError(
                    f"{self.where} is corrupt: its data ends after {self.produced} of the "
                    f"{self.info.file_size} bytes the zip directory declares"
                )
            parts.append(out)
            n -= len(out)
            self.produced += len(out)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def finish(self) -> None:
        """Check that the stream ends where the zip directory says."""
        if self._step(1):
            raise DataError(
                f"{self.where} is corrupt: it holds more than the {self.info.file_size} "
                "bytes the zip directory declares"
            )
        # An LZMA stream may end without an end marker, when its flags say so.
        marker = self.deflate or self.info.compress_type == zipfile.ZIP_BZIP2
        marker = marker or self.info.flag_bits & _LZMA_END_MARKER
        if marker and not self.engine.eof:
            raise DataError(f"{self.where} is corrupt: its compressed stream is cut short")


def _all_finite(values: np.ndarray) -> bool:
    if values.dtype.kind == "c":  # as real and imaginary parts, which numpy checks faster
        order, size = values.dtype.byteorder, values.dtype.itemsize // 2
        values = values.view(np.dtype(f"{order}f{size}"))
    return bool(np.isfinite(values).all())


def _npy_header(read, limit: int, where: str) -> tuple[bytes, tuple]:
    """Read a `.npy` header with `read(n)`, taking at most `limit` bytes: the header's
    bytes and `(shape, fortran_order, dtype)`."""
    taken = bytearray()

    def take(n: int) -> bytes:
        if len(taken) + n > limit:
            raise DataError(f"{where} is not a .npy array (it ends inside its header)")
        taken.extend(read(n))
        return bytes(taken[-n:])

    with _faults(where, " is not a .npy array"):
        version = np.lib.format.read_magic(io.BytesIO(take(8)))
    if version not in ((1, 0), (2, 0)):
        raise DataError(f"{where} has .npy format version {version}; 1.0 and 2.0 are read")
    length = int.from_bytes(take(2 if version == (1, 0) else 4), "little")
    if length > _MAX_HEADER:
        raise DataError(f"{where} has a .npy header of {length} bytes, more than {_MAX_HEADER}")
    take(length)
    parse = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    with _faults(where, " is not a .npy array"):
        fields = parse[version](io.BytesIO(bytes(taken[8:])), max_header_size=_MAX_HEADER)
    return bytes(taken), fields


@contextlib.contextmanager
def _faults(where: str, problem: str) -> Iterator[None]:
    """Turn what a malformed file makes the parsers raise into one `DataError`:
    `f"{where}{problem} (why)"`, or that there is not enough memory."""
    try:
        yield
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{where}: not enough memory to read it") from None
    except OSError as err:  # bz2's errors on bad data have no errno; the disk's have one
        raise DataError(f"{where}{problem} ({err.strerror if err.errno else err})") from None
    except _MALFORMED as err:
        raise DataError(f"{where}{problem} ({err or type(err).__name__})") from None


def _open_input(path: Path) -> _InputFile:
    """Open a regular file for reading; anything else is refused without being opened."""
    try:
        _check_regular(path, os.stat(path).st_mode)
        handle = _InputFile(path)
        try:  # what was opened: a FIFO put there since is not waited on (O_NONBLOCK)
            _check_regular(path, os.fstat(handle.fileno()).st_mode)
        except BaseException:
            handle.close()
            raise
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"{path}: no such file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be opened ({err.strerror or err})") from None
    return handle


def _check_regular(path: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a directory")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")
        raise DataError(f"{path}: is not a regular file ({kind})")


class _InputFile(io.FileIO):
    """A file opened without blocking (O_NONBLOCK), whose `read(n)` never allocates more
    than the file holds, whatever size a damaged zip directory gives `zipfile` to read."""

    def __init__(self, path: Path):
        flags = os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
        super().__init__(os.fspath(path), "r", opener=lambda p, f: os.open(p, f | flags))

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = min(size, max(0, os.fstat(self.fileno()).st_size - self.tell()))
        return super().read(size)


def _read_into(handle: io.FileIO, view: memoryview, offset: int) -> int:
    """Fill `view` from `offset` with file reads; the number of bytes read."""
    handle.seek(offset)
    done = 0
    while done < len(view):
        n = handle.readinto(view[done:])
        if not n:
            break
        done += n
    return done


def _read_at(handle: io.FileIO, offset: int, n: int) -> bytes:
    buffer = bytearray(n)
    return bytes(buffer[: _read_into(handle, memoryview(buffer), offset)])


def save_npz(path, arrays: dict, force: bool = False) -> None:
    """Write arrays to an uncompressed NPZ file atomically (readable memory-mapped)."""
    with atomic_path(path, force) as temporary, NpzWriter(temporary) as writer:
        for key, value in arrays.items():
            writer.add(key, value)


class NpzWriter:
    """An uncompressed NPZ file written member by member, large members in chunks."""

    def __init__(self, path):
        self._zip = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._zip.close()

    def add(self, key: str, array) -> None:
        with self._zip.open(f"{key}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)

    @contextlib.contextmanager
    def stream(self, key: str, shape, dtype):
        """Write an array of `shape` chunk by chunk along its first axis."""
        dtype = np.dtype(dtype)
        header = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": tuple(shape),
        }
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        written = 0
        with self._zip.open(f"{key}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_2_0(member, header)

            def write(chunk):
                nonlocal written
                chunk = np.ascontiguousarray(chunk, dtype)
                member.write(memoryview(chunk).cast("B"))
                written += chunk.nbytes

            yield write
        if written != expected:
            raise RuntimeError(f"{key}: wrote {written} bytes, expected {expected}")
