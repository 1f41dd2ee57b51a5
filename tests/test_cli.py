"""The ptycho-patches command line, end to end."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from support import oracle_patches

from ptycho import cli
from ptycho.data import load_dataset, open_npz_arrays, save_npz
from ptycho.demo import demo_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "scan.npz"
    save_npz(path, demo_dataset(size=96, N=16, count=100, seed=2))
    return path


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_extract_matches_the_oracle_at_the_member_positions(dataset, tmp_path, capsys):
    out = tmp_path / "patches.npz"
    status, stdout, _ = run(capsys, "extract", dataset, "-o", out, "--N", 16, "--gridsize", 2)
    assert status == 0 and "wrote" in stdout
    result = open_npz_arrays(out)
    Y, nn = result["Y"], result["nn_indices"]
    assert Y.shape == (100, 16, 16, 4) and Y.dtype == np.complex64
    assert result["global_offsets"].shape == (100, 1, 2, 1)
    assert result["local_offsets"].shape == (100, 1, 2, 4)
    assert int(result["N"]) == 16 and int(result["gridsize"]) == 2
    data = load_dataset(dataset)
    scan = np.stack([data["xcoords"], data["ycoords"]], 1).astype(np.float32)
    obj = data["objectGuess"]
    for group in (0, 37, 99):
        expected = oracle_patches(obj, scan[nn[group]], 16)  # (c, N, N)
        error = np.abs(np.moveaxis(Y[group], -1, 0) - expected).max() / np.abs(obj).max()
        assert error <= 1e-6


def test_streaming_output_equals_one_chunk(dataset, tmp_path, capsys):
    one, many = tmp_path / "one.npz", tmp_path / "many.npz"
    common = [dataset, "--N", 16, "--gridsize", 2, "--groups", 250, "--seed", 4]
    assert run(capsys, "extract", *common, "-o", one)[0] == 0
    # A 1 MiB budget streams 250 groups of 8 KiB in chunks of 128.
    assert run(capsys, "extract", *common, "-o", many, "--memory-budget-mb", 1)[0] == 0
    first, second = open_npz_arrays(one), open_npz_arrays(many)
    assert set(first) == set(second)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_preview_is_a_png(dataset, tmp_path, capsys):
    preview = tmp_path / "preview.png"
    argv = ["extract", dataset, "-o", tmp_path / "p.npz", "--N", 16, "--preview", preview]
    assert run(capsys, *argv)[0] == 0
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(preview).ndim == 3


def test_simulate_writes_a_dataset_in_the_contract(tmp_path, capsys):
    out = tmp_path / "sim.npz"
    status, stdout, _ = run(capsys, "simulate", "-o", out, "--size", 64, "--N", 16, "--count", 9)
    assert status == 0 and "9 positions" in stdout
    data = load_dataset(out, require=["objectGuess", "probeGuess", "xcoords", "diffraction"])
    assert data["diffraction"].shape == (9, 16, 16)


def test_default_dataset_runs_without_arguments(tmp_path, capsys):
    status, stdout, _ = run(capsys, "extract", "-o", tmp_path / "demo.npz", "--no-progress")
    assert status == 0 and "(1024, 64, 64, 1)" in stdout
    assert open_npz_arrays(tmp_path / "demo.npz")["Y"].shape == (1024, 64, 64, 1)


def test_the_progress_bar_goes_to_stderr_only(dataset, tmp_path, capsys):
    def extract(name, flag):
        return run(capsys, "extract", dataset, "-o", tmp_path / name, "--N", 16, flag)

    status, stdout, err = extract("shown.npz", "--progress")
    assert status == 0 and stdout.startswith("wrote") and "\r" not in stdout
    assert "\r[" + "#" * 30 + "] 100/100 groups, " in err and err.endswith(" s\n")
    status, _, err = extract("hidden.npz", "--no-progress")
    assert status == 0 and "\r" not in err and "groups, " not in err


def _bad_files(tmp_path, dataset):
    data = dict(load_dataset(dataset))
    files = {}
    files["random"] = tmp_path / "random.npz"
    files["random"].write_bytes(np.random.default_rng(0).bytes(4096))
    content = dataset.read_bytes()
    files["truncated"] = tmp_path / "truncated.npz"
    files["truncated"].write_bytes(content[: len(content) // 3])
    files["no_x"] = tmp_path / "no_x.npz"
    np.savez(files["no_x"], **{k: v for k, v in data.items() if k != "xcoords"})
    files["nan"] = tmp_path / "nan.npz"
    np.savez(files["nan"], **{**data, "ycoords": np.full_like(data["ycoords"], np.nan)})
    return files


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such file"),
        ("random", "not a readable NPZ"),
        ("truncated", "truncated.npz: "),
        ("no_x", "missing key 'xcoords'"),
        ("nan", "'ycoords' holds NaN"),
        ("N0", "--N must be >= 1"),
        ("unknown", "unrecognized arguments"),
        ("exists", "already exists"),
        ("no_dir", "no such directory"),
        ("no_command", "required"),
    ],
)
def test_errors_give_one_line_and_status_2_and_leave_nothing(
    dataset, tmp_path, capsys, case, message
):
    files = _bad_files(tmp_path, dataset)
    out = tmp_path / "out.npz"
    argv = {
        "missing": ["extract", tmp_path / "missing.npz", "-o", out],
        "N0": ["extract", dataset, "-o", out, "--N", 0],
        "unknown": ["extract", dataset, "-o", out, "--bogus"],
        "exists": ["extract", dataset, "-o", dataset],
        "no_dir": ["extract", dataset, "-o", tmp_path / "nowhere" / "out.npz"],
        "no_command": [],
    }.get(case, ["extract", files.get(case), "-o", out])
    before = sorted(os.listdir(tmp_path))
    digest = dataset.read_bytes()
    status, _, err = run(capsys, *argv)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message.lower() in lines[0].lower(), err
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, not even a temporary
    assert dataset.read_bytes() == digest  # the input is untouched


def test_read_only_output_directory(dataset, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root writes anywhere: refuse the file as the OS would
        import errno

        from ptycho import _files

        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(kwargs.get("dir")))

        monkeypatch.setattr(_files.tempfile, "mkstemp", refuse)
    try:
        status, _, err = run(capsys, "extract", dataset, "-o", locked / "out.npz", "--N", 16)
        assert status == 2 and len(err.strip().splitlines()) == 1
        assert "not writable" in err or "Permission denied" in err
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)


def test_a_full_disk_halfway_through_gives_one_line_and_leaves_no_file(
    dataset, tmp_path, capsys, monkeypatch
):
    """The disk fills up after 1 MiB of a streamed write: ENOSPC from the file itself."""
    import errno
    import zipfile

    written = [0]
    original_open = zipfile.ZipFile.open

    class FillingUp:
        def __init__(self, member):
            self.member = member

        def write(self, data):
            written[0] += len(memoryview(data).cast("B"))
            if written[0] > 2**20:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.member.write(data)

        def __getattr__(self, name):
            return getattr(self.member, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.member.__exit__(*exc)

    def open_filling(self, name, mode="r", **kwargs):
        member = original_open(self, name, mode, **kwargs)
        return FillingUp(member) if mode == "w" else member

    monkeypatch.setattr(zipfile.ZipFile, "open", open_filling)
    argv = ["extract", dataset, "-o", tmp_path / "out.npz", "--N", 16, "--gridsize", 2]
    status, _, err = run(capsys, *argv, "--groups", 1000, "--memory-budget-mb", 1)
    assert written[0] > 2**20 and status == 2
    assert err.strip() == "ptycho-patches: error: No space left on device; no partial file was left"
    assert os.listdir(tmp_path) == []


def test_an_interrupted_extraction_leaves_no_file(dataset, tmp_path, capsys, monkeypatch):
    from ptycho import ops

    calls = []
    original = ops.extract_patches

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(ops, "extract_patches", interrupt)
    argv = ["extract", dataset, "-o", tmp_path / "out.npz", "--N", 16, "--memory-budget-mb", 1]
    status, _, err = run(capsys, *argv, "--gridsize", 2, "--groups", 1000)
    assert status == 130 and "interrupted" in err
    assert os.listdir(tmp_path) == []


def test_sigterm_during_a_streamed_write_leaves_no_file(dataset, tmp_path):
    """A real process, killed with SIGTERM while its temporary output grows."""
    out = tmp_path / "out.npz"
    argv = [sys.executable, "-m", "ptycho.cli", "extract", str(dataset), "-o", str(out)]
    argv += ["--N", "64", "--gridsize", "2", "--groups", "200000", "--memory-budget-mb", "8"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, env=env, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".partial") for p in tmp_path.iterdir()):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the extraction never started writing"
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert "terminated" in err
    assert os.listdir(tmp_path) == []


def test_a_preview_at_the_output_path_is_refused_before_any_work(dataset, tmp_path, capsys):
    same = tmp_path / "same.npz"
    for extra in ([], ["--force"]):
        status, _, err = run(capsys, "extract", dataset, "-o", same, "--preview", same, *extra)
        assert status == 2 and "must be different files" in err
        assert os.listdir(tmp_path) == []


def test_a_preview_without_matplotlib_is_refused_before_any_work(
    dataset, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    argv = ["extract", dataset, "-o", tmp_path / "o.npz", "--preview", tmp_path / "p.png"]
    status, _, err = run(capsys, *argv)
    assert status == 2 and "--preview needs matplotlib" in err
    assert os.listdir(tmp_path) == []


def test_a_request_larger_than_memory_is_one_line(dataset, tmp_path, capsys):
    status, _, err = run(capsys, "extract", dataset, "-o", tmp_path / "o.npz", "--N", 200_000)
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert status == 2 and len(errors) == 1, err  # after the geometry warnings
    assert "GiB of memory available" in errors[0]
    assert os.listdir(tmp_path) == []


def test_an_output_larger_than_the_free_disk_is_refused_first(
    dataset, tmp_path, capsys, monkeypatch
):
    import collections
    import shutil

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    status, _, err = run(capsys, "extract", dataset, "-o", tmp_path / "o.npz", "--N", 16)
    assert status == 2 and "GiB of disk" in err
    assert os.listdir(tmp_path) == []


def test_neighbors_below_the_group_size_are_stored_as_used(dataset, tmp_path, capsys):
    out = tmp_path / "o.npz"
    argv = ["extract", dataset, "-o", out, "--N", 16, "--gridsize", 2, "--neighbors", 3]
    assert run(capsys, *argv)[0] == 0
    assert int(open_npz_arrays(out)["neighbors"]) == 4
