"""What may be replaced at an output path, races for it, and runs ended by signals.

Most runs here go through `cli.main` with a tiny stand-in for the demonstration dataset,
so that they exercise the real output checks, `atomic_path` and signal handling without
TensorFlow (a run of the real extraction ended by SIGTERM is in `test_cli.py`).
"""

import errno
import fcntl
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest

from ptycho import _files, cli, data, demo
from ptycho._files import atomic_path
from ptycho.data import open_npz_arrays, save_npz

SIMULATE = ["simulate", "--size", 32, "--N", 8, "--count", 4]


@pytest.fixture
def small_demo(monkeypatch):
    """`simulate` writes a tiny stand-in dataset: no TensorFlow in these runs."""

    def demo_dataset(size, N, count, seed):
        return {"objectGuess": np.ones((size, size), np.complex64), "seed": np.uint64(seed)}

    monkeypatch.setattr(demo, "demo_dataset", demo_dataset)


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def partial_name(target: str, host: str, pid: int, token: str = "abcd1234") -> str:
    return f".{target}.{host}.{pid}.{token}.partial"


# What is at the output path ------------------------------------------------------------


def _make(kind: str, path):
    """Put a `kind` at `path`; return a function that says whether it is still the same."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(path.name)  # relative: the working directory is tmp_path
        server.close()
    elif kind == "symlink":
        (path.parent / "real.npz").write_bytes(b"theirs")
        path.symlink_to("real.npz")
    elif kind == "dangling symlink":
        path.symlink_to("nowhere.npz")
    elif kind == "directory":
        path.mkdir()
        (path / "inside").write_bytes(b"kept")
    before = os.lstat(path)

    def unchanged() -> bool:
        now = os.lstat(path)
        return (now.st_ino, now.st_mode) == (before.st_ino, before.st_mode)

    return unchanged


KINDS = {
    "fifo": "is a FIFO",
    "socket": "is a socket",
    "symlink": "is a symbolic link (it is neither replaced nor written through)",
    "dangling symlink": "is a symbolic link (it is neither replaced nor written through)",
    "directory": "is a directory",
}


@pytest.mark.parametrize("force", [False, True], ids=["", "force"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_only_a_regular_file_at_the_output_is_replaced(
    tmp_path, capsys, monkeypatch, small_demo, kind, force
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.npz"
    unchanged = _make(kind, out)
    before = sorted(os.listdir(tmp_path))
    extra = ["--force"] if force else []
    for argv in (
        ["simulate", "-o", out, *extra],
        ["extract", "-o", tmp_path / "new.npz", "--preview", out, *extra],
    ):
        status, stdout, err = run(capsys, *argv)
        assert status == 2 and stdout == ""
        assert one_line(err) == f"ptycho-patches: error: {out}: {KINDS[kind]}" + (
            "" if kind == "directory" else "; only a regular file is ever replaced"
        )
    assert unchanged() and sorted(os.listdir(tmp_path)) == before
    if kind == "symlink":
        assert (tmp_path / "real.npz").read_bytes() == b"theirs"  # not written through
    # The library refuses the same, with or without force, before writing anything.
    error = IsADirectoryError if kind == "directory" else FileExistsError
    with pytest.raises(error, match=re.escape(KINDS[kind])):
        save_npz(out, {"x": np.ones(3)}, force=force)
    assert unchanged() and sorted(os.listdir(tmp_path)) == before


def _never_onto_dev_null(move):
    def guarded(source, target, *args, **kwargs):
        if os.path.abspath(target) == "/dev/null":
            raise AssertionError(f"os.{move.__name__} onto /dev/null")
        return move(source, target, *args, **kwargs)

    return guarded


@pytest.mark.parametrize("force", [False, True], ids=["", "force"])
def test_dev_null_is_refused_and_left_a_device(tmp_path, capsys, monkeypatch, small_demo, force):
    # A safety net, so that a regression fails this test instead of replacing the
    # machine's /dev/null (as the code before this test did, with --force).
    for name in ("replace", "rename"):
        monkeypatch.setattr(os, name, _never_onto_dev_null(getattr(os, name)))
    before = os.stat("/dev/null")
    extra = ["--force"] if force else []
    status, _, err = run(capsys, *SIMULATE, "-o", "/dev/null", *extra)
    assert status == 2
    assert "/dev/null: is a character device" in one_line(err)
    with pytest.raises(FileExistsError, match="character device"):
        with atomic_path("/dev/null", force=True):
            pytest.fail("the block must not run")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino
    assert not [name for name in os.listdir("/dev") if name.endswith(".partial")]


def test_a_regular_file_is_replaced_only_with_force_and_keeps_its_permissions(
    tmp_path, capsys, small_demo
):
    out = tmp_path / "out.npz"
    out.write_bytes(b"old")
    out.chmod(0o600)
    status, _, err = run(capsys, *SIMULATE, "-o", out)
    assert status == 2 and "already exists" in one_line(err)
    assert out.read_bytes() == b"old"
    assert run(capsys, *SIMULATE, "-o", out, "--force")[0] == 0
    assert "objectGuess" in open_npz_arrays(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    out.chmod(0o640)
    save_npz(out, {"x": np.ones(2)}, force=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and list(open_npz_arrays(out)) == ["x"]
    assert os.listdir(tmp_path) == ["out.npz"]


# Races for the output path --------------------------------------------------------------


@pytest.fixture(params=["renameat2", "link", "exclusive create"])
def mechanism(request, monkeypatch):
    """How the finished file is moved into place without replacing anything: renameat2
    with RENAME_NOREPLACE, else a hard link, else an exclusively created placeholder."""
    if request.param == "renameat2":
        if _files._renameat2_function() is None:
            pytest.skip("no renameat2 in this C library")
        return request.param
    monkeypatch.setattr(_files, "_renameat2", lambda source, target: None)
    if request.param == "exclusive create":

        def no_hard_links(source, target):
            raise PermissionError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(_files.os, "link", no_hard_links)
    return request.param


def test_a_file_created_during_the_run_is_kept(
    tmp_path, capsys, monkeypatch, small_demo, mechanism
):
    out = tmp_path / "out.npz"
    add = data.NpzWriter.add

    def add_while_someone_creates_the_output(self, key, value):
        if not out.exists():
            out.write_bytes(b"theirs")
        add(self, key, value)

    monkeypatch.setattr(data.NpzWriter, "add", add_while_someone_creates_the_output)
    status, stdout, err = run(capsys, *SIMULATE, "-o", out)
    assert status == 2 and stdout == ""
    assert one_line(err) == (
        f"ptycho-patches: error: {out}: was created by another program during this run and "
        "was kept (use --force to overwrite); no partial file was left"
    )
    assert out.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["out.npz"]


def test_of_two_runs_on_one_output_the_first_to_finish_wins(tmp_path, mechanism):
    out = tmp_path / "out.npz"
    with pytest.raises(FileExistsError, match="created by another program"):
        with atomic_path(out) as slow:
            slow.write_bytes(b"slow")
            with atomic_path(out) as fast:
                fast.write_bytes(b"fast")
            assert out.read_bytes() == b"fast"
    assert out.read_bytes() == b"fast" and os.listdir(tmp_path) == ["out.npz"]
    # Without a race, each mechanism writes the file and leaves nothing else.
    with atomic_path(tmp_path / "alone.npz") as temporary:
        temporary.write_bytes(b"alone")
    assert (tmp_path / "alone.npz").read_bytes() == b"alone"
    assert sorted(os.listdir(tmp_path)) == ["alone.npz", "out.npz"]


def test_with_force_what_appeared_is_checked_again_before_the_replace(tmp_path):
    out = tmp_path / "out.npz"
    with pytest.raises(FileExistsError, match="is a FIFO"):
        with atomic_path(out, force=True) as temporary:
            temporary.write_bytes(b"new")
            os.mkfifo(out)
    assert stat.S_ISFIFO(os.lstat(out).st_mode) and os.listdir(tmp_path) == ["out.npz"]


def test_a_failed_write_leaves_no_partial(tmp_path):
    class FullDisk:
        def __array__(self, dtype=None, copy=None):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        save_npz(tmp_path / "out.npz", {"x": np.ones(3), "y": FullDisk()})
    assert os.listdir(tmp_path) == []


# Partial files of other runs --------------------------------------------------------------


def test_partials_of_dead_runs_are_removed_and_no_others(tmp_path, capsys, small_demo):
    host, dead, live = _files._host(), dead_pid(), os.getpid()
    names = {
        "dead": partial_name("out.npz", host, dead),
        "live": partial_name("out.npz", host, live),
        "other host": partial_name("out.npz", "elsewhere", dead),
        "other target": partial_name("other.npz", host, dead),
        "not a partial": partial_name("out.npz", host, dead) + ".bak",
        "directory": partial_name("out.npz", host, dead, "dir00000"),
        "symlink": partial_name("out.npz", host, dead, "link0000"),
        "locked": partial_name("out.npz", host, dead, "lock0000"),
    }
    for key, name in names.items():
        if key == "directory":
            (tmp_path / name).mkdir()
        elif key == "symlink":
            (tmp_path / name).symlink_to("kept.txt")
        else:
            (tmp_path / name).write_bytes(b"x")
    (tmp_path / "kept.txt").write_bytes(b"kept")
    # A dead pid here, but a live writer (another pid namespace) holds the file's lock.
    holder = os.open(tmp_path / names["locked"], os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        status, _, err = run(capsys, *SIMULATE, "-o", tmp_path / "out.npz")
    finally:
        os.close(holder)
    assert status == 0
    # Those a live process, or another host, may be writing are named in one warning.
    warning = one_line(err)
    assert warning.startswith(f"ptycho-patches: warning: {tmp_path / 'out.npz'}: another run")
    for key in ("live", "other host", "locked"):
        assert names[key] in warning
    assert names["dead"] not in warning
    left = set(os.listdir(tmp_path))
    assert left == {"out.npz", "kept.txt", *names.values()} - {names["dead"]}
    assert (tmp_path / "kept.txt").read_bytes() == b"kept"
    with warnings.catch_warnings():  # the library says nothing about the live ones
        warnings.simplefilter("error")
        save_npz(tmp_path / "out.npz", {"x": np.ones(1)}, force=True)
    assert set(os.listdir(tmp_path)) == left - {names["locked"]}  # its lock was released


# Signals ------------------------------------------------------------------------------------

# `ptycho-patches simulate` whose write never ends: it says "writing" once the partial
# file holds data, then waits for a signal.
_NEVER_ENDING = """
import sys, time
import numpy as np
from ptycho import cli, data, demo
demo.demo_dataset = lambda *args: {"x": np.zeros(1000)}
add = data.NpzWriter.add
def add_forever(self, key, value):
    add(self, key, value)
    print("writing", flush=True)
    while True:
        time.sleep(0.01)
data.NpzWriter.add = add_forever
sys.exit(cli.main(sys.argv[1:]))
"""


def _start_writing(tmp_path, *extra, preexec_fn=None):
    folder = tmp_path / "out"
    folder.mkdir(exist_ok=True)
    argv = [sys.executable, "-c", _NEVER_ENDING, *map(str, SIMULATE), "-o", folder / "out.npz"]
    process = subprocess.Popen(
        [*map(str, argv), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        preexec_fn=preexec_fn,
    )
    line = process.stdout.readline()
    if line != "writing\n":
        process.kill()
        pytest.fail(f"the run did not start writing: {line!r} {process.communicate()}")
    partials = [name for name in os.listdir(folder) if name.endswith(".partial")]
    assert len(partials) == 1  # the signal comes mid-write
    return process, folder


# The signals a run ends on, less those Python ignores (SIGXFSZ: the write fails instead).
SIGNALS = [
    signal.Signals(s).name for s in cli.TERMINATING_SIGNALS if signal.getsignal(s) != signal.SIG_IGN
]


@pytest.mark.parametrize("name", SIGNALS)
def test_a_termination_signal_mid_write_leaves_no_partial(tmp_path, name):
    signum = getattr(signal, name)
    process, folder = _start_writing(tmp_path)
    try:
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signum
    how = "interrupted" if name == "SIGINT" else "terminated"
    assert one_line(err) == f"ptycho-patches: {how} by {name}; no partial file was left"
    assert os.listdir(folder) == []


def test_ignored_signals_stay_ignored(tmp_path):
    """As under `nohup`: an inherited SIG_IGN is kept (and Python's own for SIGXFSZ)."""
    process, folder = _start_writing(
        tmp_path, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)
    )
    try:
        process.send_signal(signal.SIGHUP)  # discarded by the kernel when ignored
        process.send_signal(signal.SIGXFSZ)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert "terminated by SIGTERM" in one_line(err) and os.listdir(folder) == []


def test_signal_handlers_are_put_back_when_main_returns(tmp_path, capsys, monkeypatch):
    during = {}

    def demo_dataset(*args):
        during.update({s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)})
        return {"x": np.ones(1)}

    monkeypatch.setattr(demo, "demo_dataset", demo_dataset)
    saved = (
        signal.signal(signal.SIGUSR1, signal.SIG_DFL),
        signal.signal(signal.SIGUSR2, signal.SIG_IGN),
    )
    try:
        before = {s: signal.getsignal(s) for s in cli.TERMINATING_SIGNALS}
        assert run(capsys, *SIMULATE, "-o", tmp_path / "out.npz")[0] == 0
        assert {s: signal.getsignal(s) for s in cli.TERMINATING_SIGNALS} == before
    finally:
        signal.signal(signal.SIGUSR1, saved[0])
        signal.signal(signal.SIGUSR2, saved[1])
    assert during == {signal.SIGUSR1: cli._terminate, signal.SIGUSR2: signal.SIG_IGN}


def test_a_killed_run_leaves_a_partial_that_the_next_run_removes(tmp_path, capsys, small_demo):
    process, folder = _start_writing(tmp_path)
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    (leftover,) = os.listdir(folder)
    assert leftover.startswith(f".out.npz.{_files._host()}.{process.pid}.")
    status, _, err = run(capsys, *SIMULATE, "-o", folder / "out.npz")
    assert status == 0 and err == ""
    assert os.listdir(folder) == ["out.npz"]


# Arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["extract", "simulate"])
@pytest.mark.parametrize("value", ["-1", str(2**64), "1.5"])
def test_a_bad_seed_is_named(tmp_path, capsys, command, value):
    status, _, err = run(capsys, command, "-o", tmp_path / "out.npz", "--seed", value)
    assert status == 2
    assert one_line(err).startswith("ptycho-patches: error: --seed must be an integer")
    assert value in err and os.listdir(tmp_path) == []


def test_the_largest_seed_is_taken_and_stored(tmp_path, capsys, small_demo):
    out = tmp_path / "out.npz"
    assert run(capsys, *SIMULATE, "-o", out, "--seed", 2**64 - 1)[0] == 0
    assert open_npz_arrays(out)["seed"] == 2**64 - 1


def test_a_simulation_too_large_for_memory_is_refused_before_it_starts(
    tmp_path, capsys, monkeypatch
):
    from ptycho import _memory

    def never(*args):
        raise AssertionError("nothing may be allocated")

    monkeypatch.setattr(demo, "demo_dataset", never)
    monkeypatch.setattr(_memory, "available_memory", lambda: 8 * 2**30)
    status, _, err = run(capsys, "simulate", "-o", tmp_path / "out.npz", "--size", 200000)
    assert status == 2
    need = demo.demo_bytes(200000, 64, 1024) / 2**30
    assert f"would need {need:.1f} GiB of memory, more than the 8.0 GiB" in one_line(err)
    assert os.listdir(tmp_path) == []
