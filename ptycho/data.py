"""Dataset files: the PtychoPINN NPZ contract, read, validated and written.

| key | shape | dtype |
|---|---|---|
| `objectGuess` | `(M, M')` | complex64 |
| `probeGuess` | `(N, N)` | complex64 |
| `xcoords`, `ycoords` | `(n,)` | float64, scan positions in object pixels |
| `diffraction` (older name `diff3d`) | `(n, N, N)` | float32 amplitude |
| `Y` (optional) | `(n, N, N)` | complex64 ground-truth patches |
| `scan_index` (optional) | `(n,)` | int |

Arrays stored uncompressed in the contract's dtype are memory-mapped straight from the
file, so a large `diffraction` array is neither read into memory nor copied; compressed
ones, and those converted to the contract's dtype, are read once. Every check names the
key it failed on.

Files come from users, and are read as if they were hostile (see `ptycho._npz`): only the
members that are used are read, the sizes their `.npy` headers declare and the memory the
arrays will need are checked before any data is read, and every member read is checked
against its CRC-32 in the same single pass that checks its values. Whatever a damaged file
makes the parsers raise becomes a :class:`DataError` of one line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ptycho._npz import (
    Archive,
    DataError,
    NpzWriter,
    check_read_memory,
    is_held,
    open_npz_arrays,
    read_rows,
    save_npz,
)

__all__ = [
    "ArrayLayout",
    "DataError",
    "Dataset",
    "NpzWriter",
    "check_names",
    "dataset_layout",
    "load_dataset",
    "open_npz_arrays",
    "read_rows",
    "save_npz",
]

KEYS = ("objectGuess", "probeGuess", "xcoords", "ycoords", "diffraction", "Y", "scan_index")
OLD_NAMES = {"diff3d": "diffraction"}

# Each key's rank, the dtype kinds accepted, and the dtype it is converted to.
_CONTRACT = {
    "objectGuess": (2, "fc", np.dtype(np.complex64)),
    "probeGuess": (2, "fc", np.dtype(np.complex64)),
    "xcoords": (1, "fiu", np.dtype(np.float64)),
    "ycoords": (1, "fiu", np.dtype(np.float64)),
    "diffraction": (3, "fiu", np.dtype(np.float32)),
    "Y": (3, "fc", np.dtype(np.complex64)),
    "scan_index": (1, "iu", np.dtype(np.int64)),
}


class Dataset(dict):
    """The arrays of a dataset file by contract key; `source_dtypes` gives each key's
    dtype as stored in the file, before conversion to the contract's dtype."""

    source_dtypes: dict


def load_dataset(
    path,
    require: Iterable[str] = ("objectGuess", "xcoords", "ycoords"),
    names: Mapping[str, str] | None = None,
) -> Dataset:
    """Read and validate a dataset file.

    Only the file's members for the contract's keys (or their old names, or the names
    given in `names`) are read; the others are not. The shapes and dtypes their `.npy`
    headers declare are checked, and the memory the arrays will take, before any data is
    read. Then each member is read once: its CRC-32 is checked, and its values, converted
    to the contract's dtype, must be finite.

    Arrays stored uncompressed in the contract's dtype are returned memory-mapped (see
    :func:`open_npz_arrays`): the file must not be truncated while they are in use, or
    reading them kills the process with SIGBUS, which is inherent to memory maps. Read
    their rows with :func:`read_rows` to get a `DataError` instead.

    Args:
        path: an `.npz` file in the contract.
        require: keys that must be present (others are validated when present).
        names: the file's own name for contract keys it stores under another name, for
            example `{"objectGuess": "obj", "xcoords": "x"}`.

    Returns:
        A :class:`Dataset` of the contract's keys that the file holds (`diff3d` renamed
        `diffraction`), each converted to the contract's dtype. Keys outside the contract
        are left out.

    Raises:
        DataError: the file is missing, not a regular file, not an NPZ file, truncated,
            corrupt or too large for the free memory, or a key is missing or has the wrong
            shape or dtype, or values that are not finite in the contract's dtype.
        ValueError: `names` maps a key that is not in the contract.
    """
    names = check_names(names or {})
    with Archive(path) as archive:
        members, targets = _plan(archive, names, require)
        check_read_memory(archive.path, [(members[key], targets[key]) for key in members])
        data = Dataset(
            (key, archive.array(member, targets[key], key=key)) for key, member in members.items()
        )
    data.source_dtypes = {key: member.dtype for key, member in members.items()}
    return data


class ArrayLayout(NamedTuple):
    """What :func:`load_dataset` will return for one key, and the bytes it will hold in
    memory (0 for an array memory-mapped from the file)."""

    shape: tuple
    dtype: np.dtype
    held: int


def dataset_layout(
    path,
    require: Iterable[str] = ("objectGuess", "xcoords", "ycoords"),
    names: Mapping[str, str] | None = None,
) -> dict:
    """The shapes and dtypes :func:`load_dataset` would return, read from the headers.

    No data is read: of a compressed member, only its header is decompressed. The checks
    that need only the headers are made (keys, shapes, dtypes, sizes), so that a caller
    can check the memory a whole computation will need before reading any array.

    Returns:
        `{key: ArrayLayout(shape, dtype, held)}` for the keys `load_dataset` would return,
        in the contract's dtypes; `held` is the bytes held in memory once loaded.
    """
    names = check_names(names or {})
    with Archive(path) as archive:
        members, targets = _plan(archive, names, require)
    layout = {}
    for key, member in members.items():
        held = member.count * targets[key].itemsize if is_held(member, targets[key]) else 0
        layout[key] = ArrayLayout(member.shape, targets[key], held)
    return layout


def check_names(names: Mapping[str, str]) -> dict:
    """Validate a mapping of contract keys to a file's own names (see `load_dataset`)."""
    for key in names:
        if key not in (*KEYS, *OLD_NAMES):
            raise ValueError(
                f"{key!r} is not a key of the contract ({', '.join((*KEYS, *OLD_NAMES))})"
            )
    return dict(names)


def _plan(archive: Archive, names: dict, require: Iterable[str]) -> tuple[dict, dict]:
    """The members read for the contract's keys, their headers checked, and the dtype of
    each key."""
    sources = _sources(archive, names, require)
    members = {key: archive.member(sources[key]) for key in KEYS if key in sources}
    _check_layout(archive.path, {key: (m.shape, m.dtype) for key, m in members.items()})
    return members, {key: _CONTRACT[key][2] for key in members}


def _sources(archive: Archive, names: dict, require: Iterable[str]) -> dict:
    """The member read for each contract key the file holds."""
    listed = archive.infos
    if not listed:
        raise DataError(f"{archive.path}: the file holds no arrays")
    sources = {key: key for key in KEYS if key in listed}
    for key, stored in names.items():
        if stored not in listed:
            raise DataError(
                f"{archive.path}: missing key '{stored}' "
                f"(named for '{key}'; the file has {archive.names})"
            )
        sources[OLD_NAMES.get(key, key)] = stored
    for old, new in OLD_NAMES.items():
        if old in listed and new not in sources:
            sources[new] = old
    for key in require:
        if key not in sources:
            raise DataError(f"{archive.path}: missing key '{key}' (the file has {archive.names})")
    return sources


def _check_layout(path: Path, layout: dict) -> None:
    """Check the shapes and dtypes the headers declare, `{key: (shape, dtype)}`."""

    def fail(key, message):
        raise DataError(f"{path}: key '{key}' {message}")

    for key, (shape, dtype) in layout.items():
        rank, kinds, contract = _CONTRACT[key]
        if len(shape) != rank:
            fail(key, f"must have {rank} dimensions, found shape {shape}")
        if dtype.kind not in kinds:
            fail(key, f"must be {contract}, found {dtype}")
        if math.prod(shape) == 0:
            fail(key, f"must not be empty, found shape {shape}")
    shapes = {key: shape for key, (shape, _) in layout.items()}
    if "probeGuess" in shapes and shapes["probeGuess"][0] != shapes["probeGuess"][1]:
        fail("probeGuess", f"must be square, found shape {shapes['probeGuess']}")
    count = shapes["xcoords"][0] if "xcoords" in shapes else None
    if count is not None and "ycoords" in shapes and shapes["ycoords"][0] != count:
        fail("ycoords", f"has {shapes['ycoords'][0]} values but xcoords has {count}")
    for key, what in (("diffraction", "patterns"), ("Y", "patches")):
        if count is not None and key in shapes and shapes[key][0] != count:
            fail(key, f"has {shapes[key][0]} {what} but there are {count} positions")
    if count is not None and "scan_index" in shapes and shapes["scan_index"][0] != count:
        fail("scan_index", f"has {shapes['scan_index'][0]} values, expected {count}")
