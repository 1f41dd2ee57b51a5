"""`ptycho-patches extract` writes a file ready to train on, and checks the geometry first."""

import os

import numpy as np
import pytest

from ptycho import cli
from ptycho.data import load_dataset, open_npz_arrays, save_npz
from ptycho.demo import demo_dataset
from ptycho.geometry import scan_warnings


@pytest.fixture(scope="module")
def data():
    return demo_dataset(size=96, N=16, count=100, seed=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("data") / "scan.npz"
    save_npz(path, data)
    return path


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("gridsize", [1, 2])
def test_x_holds_the_diffraction_of_y_s_members_in_the_same_order(
    dataset, data, tmp_path, capsys, gridsize
):
    out = tmp_path / "train.npz"
    argv = ["extract", dataset, "-o", out, "--N", 16, "--gridsize", gridsize, "--seed", 3]
    status, stdout, err = run(capsys, *argv, "--memory-budget-mb", 1)
    assert status == 0 and err == ""
    c = gridsize**2
    result = open_npz_arrays(out)
    X, Y, nn = result["X"], result["Y"], result["nn_indices"]
    assert X.shape == Y.shape == (100, 16, 16, c) and X.dtype == np.float32
    assert f"X (100, 16, 16, {c}) float32" in stdout
    for g in range(len(nn)):
        for k in range(c):
            np.testing.assert_array_equal(X[g, :, :, k], data["diffraction"][nn[g, k]])
            # Y's member k is the patch at member k's position: the same scan point.
            np.testing.assert_allclose(Y[g, :, :, k], data["Y"][nn[g, k]], atol=2e-6)
    np.testing.assert_array_equal(result["probeGuess"], data["probeGuess"])


def test_streamed_x_equals_one_chunk(dataset, tmp_path, capsys):
    common = [dataset, "--N", 16, "--gridsize", 2, "--groups", 300]
    assert run(capsys, "extract", *common, "-o", tmp_path / "a.npz")[0] == 0
    assert (
        run(capsys, "extract", *common, "-o", tmp_path / "b.npz", "--memory-budget-mb", 1)[0] == 0
    )
    np.testing.assert_array_equal(
        open_npz_arrays(tmp_path / "a.npz")["X"], open_npz_arrays(tmp_path / "b.npz")["X"]
    )


def test_without_diffraction_there_is_no_x(data, tmp_path, capsys):
    path = tmp_path / "no_diffraction.npz"
    save_npz(path, {k: v for k, v in data.items() if k not in ("diffraction", "probeGuess")})
    assert run(capsys, "extract", path, "-o", tmp_path / "o.npz", "--N", 16)[0] == 0
    assert {"X", "probeGuess"}.isdisjoint(open_npz_arrays(tmp_path / "o.npz"))


def test_keys_map_other_names_to_the_contract(data, dataset, tmp_path, capsys):
    renamed = tmp_path / "renamed.npz"
    names = {"objectGuess": "obj", "xcoords": "x", "ycoords": "y", "diffraction": "amp"}
    save_npz(renamed, {names.get(k, k): v for k, v in data.items()})
    mapping = ",".join(f"{k}={v}" for k, v in names.items())
    status, _, err = run(
        capsys, "extract", renamed, "-o", tmp_path / "a.npz", "--N", 16, "--keys", mapping
    )
    assert status == 0, err
    assert run(capsys, "extract", dataset, "-o", tmp_path / "b.npz", "--N", 16)[0] == 0
    first, second = open_npz_arrays(tmp_path / "a.npz"), open_npz_arrays(tmp_path / "b.npz")
    for key in ("X", "Y", "probeGuess", "nn_indices"):
        np.testing.assert_array_equal(first[key], second[key])
    loaded = load_dataset(renamed, names={"objectGuess": "obj", "xcoords": "x", "ycoords": "y"})
    assert loaded["objectGuess"].shape == (96, 96)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("objectGuess=nothere", "missing key 'nothere'"),
        ("bogus=obj", "'bogus' is not a key of the contract"),
        ("objectGuess", "KEY=NAME"),
        ("objectGuess=a,objectGuess=b", "--keys names 'objectGuess' twice"),
    ],
)
def test_bad_keys_are_one_line(dataset, tmp_path, capsys, keys, message):
    status, _, err = run(capsys, "extract", dataset, "-o", tmp_path / "o.npz", "--keys", keys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert os.listdir(tmp_path) == []


def test_simulate_writes_centred_diffraction(tmp_path, capsys):
    out = tmp_path / "sim.npz"
    assert run(capsys, "simulate", "-o", out, "--size", 64, "--N", 16, "--count", 9)[0] == 0
    data = load_dataset(out, require=["objectGuess", "probeGuess", "diffraction"])
    patches = data["Y"] * data["probeGuess"]
    uncentred = np.abs(np.fft.fft2(patches)) / 16
    np.testing.assert_allclose(
        data["diffraction"], np.fft.fftshift(uncentred, axes=(-2, -1)), rtol=1e-4, atol=1e-5
    )
    # The probe is a smooth disc: the brightest pixel is the zero frequency, at the centre.
    flat = data["diffraction"].reshape(9, -1).argmax(axis=1)
    assert (flat == 8 * 16 + 8).all()


def _variant(data, tmp_path, name, **changes):
    path = tmp_path / f"{name}.npz"
    save_npz(path, {**data, **changes})
    return path


GEOMETRY = {
    # case: (changes to the dataset or arguments, the warning's words, the number it names)
    "outside": ("xcoords", "lie outside the object", "3 of 100"),
    "missed": ("xcoords", "miss the object entirely", "2 of 100"),
    "N_object": ("--N", "larger than the object", "N=128"),
    "N_probe": ("--N", "differs from the probe size", "(16, 16)"),
    "N_diffraction": ("--N", "differs from the diffraction pattern size", "(16, 16)"),
    "real": ("objectGuess", "objectGuess is real", "float32"),
    "neighbors": ("--neighbors", "more than the 100 scan positions", "neighbors=500"),
}


def _geometry_case(case, data, tmp_path):
    args = ["--N", 16]
    if case in ("outside", "missed"):
        x = data["xcoords"].copy()
        if case == "outside":
            x[:3] = [-0.5, 96.0, 100.0]  # outside, but each patch still overlaps the object
        else:
            x[:2] = [-20.0, 200.0]
        return _variant(data, tmp_path, case, xcoords=x), args
    if case.startswith("N_"):
        return _variant(data, tmp_path, case), ["--N", 128 if case == "N_object" else 20]
    if case == "real":
        return _variant(data, tmp_path, case, objectGuess=data["objectGuess"].real), args
    return _variant(data, tmp_path, case), [*args, "--gridsize", 2, "--neighbors", 500]


@pytest.mark.parametrize("case", sorted(GEOMETRY))
def test_each_geometry_problem_is_one_warning_line(data, tmp_path, capsys, case):
    path, args = _geometry_case(case, data, tmp_path)
    _, words, number = GEOMETRY[case]
    out = tmp_path / "o.npz"
    status, stdout, err = run(capsys, "extract", path, "-o", out, *args)
    assert status == 0 and "wrote" in stdout
    warnings = [line for line in err.splitlines() if words in line]
    assert len(warnings) == 1, err
    assert warnings[0].startswith("ptycho-patches: warning: ") and number in warnings[0]
    assert out.exists()


@pytest.mark.parametrize("case", sorted(GEOMETRY))
def test_strict_turns_each_geometry_warning_into_exit_2(data, tmp_path, capsys, case):
    path, args = _geometry_case(case, data, tmp_path)
    _, words, number = GEOMETRY[case]
    before = sorted(os.listdir(tmp_path))
    status, stdout, err = run(capsys, "extract", path, "-o", tmp_path / "o.npz", *args, "--strict")
    assert status == 2 and stdout == "" and "Traceback" not in err
    lines = err.splitlines()
    warnings = [line for line in lines if words in line]
    assert len(warnings) == 1 and warnings[0].startswith("ptycho-patches: warning: ")
    assert number in warnings[0]
    errors = [line for line in lines if line.startswith("ptycho-patches: error: ")]
    assert errors == [lines[-1]] and "--strict" in errors[0] and "nothing was written" in errors[0]
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


def test_only_the_positions_extracted_are_checked(data, tmp_path, capsys):
    x = data["xcoords"].copy()
    x[50:] = 500.0  # far off the object, but beyond the 10 groups extracted
    path = _variant(data, tmp_path, "far_tail", xcoords=x)
    argv = ["extract", path, "-o", tmp_path / "o.npz", "--N", 16, "--groups", 10, "--strict"]
    status, _, err = run(capsys, *argv)
    assert status == 0 and err == ""


def test_a_sound_dataset_gives_no_warning_even_with_strict(dataset, tmp_path, capsys):
    argv = ["extract", dataset, "-o", tmp_path / "o.npz", "--N", 16, "--gridsize", 2]
    status, _, err = run(capsys, *argv, "--strict")
    assert status == 0 and err == ""


def test_scan_warnings_counts_edges_exactly():
    # N = 4 reads u = p - 2 .. p + 1; obj(u) is non-zero for -1 < u < 10.
    x = np.array([-2.0, -2.001, 11.999, 12.0, 5.0])
    y = np.full(5, 5.0)
    [outside, missed] = scan_warnings((10, 10), x, y, 4)
    assert outside.startswith("4 of 5 scan positions lie outside")
    assert "x -2.001 to 12" in outside
    assert missed.startswith("3 of 5 scan positions give patches that miss")
    assert scan_warnings((10, 10), [0.0, 9.0], [0.0, 9.0], 4) == []
    # The count agrees with the patches themselves: all zero exactly where it says.
    from ptycho import extract_patches

    patches = extract_patches(np.ones((10, 10), np.complex64), np.stack([x, y], 1), 4)
    zero = np.abs(patches.numpy()).reshape(5, -1).max(axis=1) == 0
    np.testing.assert_array_equal(zero, [True, True, False, True, False])


def test_the_built_in_dataset_gives_x_y_and_the_probe_in_group_order(tmp_path, capsys):
    out = tmp_path / "demo.npz"
    argv = ["extract", "-o", out, "--gridsize", 2, "--groups", 64, "--no-progress"]
    status, stdout, err = run(capsys, *argv)
    assert status == 0 and err == "" and "X (64, 64, 64, 4) float32" in stdout
    built_in = demo_dataset()
    result = open_npz_arrays(out)
    X, Y, nn = result["X"], result["Y"], result["nn_indices"]
    for g in range(64):
        for k in range(4):
            np.testing.assert_array_equal(X[g, :, :, k], built_in["diffraction"][nn[g, k]])
            np.testing.assert_allclose(Y[g, :, :, k], built_in["Y"][nn[g, k]], atol=2e-6)
    np.testing.assert_array_equal(result["probeGuess"], built_in["probeGuess"])


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "fourier"])
@pytest.mark.parametrize("N", [4, 5])
def test_the_miss_count_agrees_with_the_patches(interpolation, N):
    """A position counted as missing the object gives an all-zero patch; for bilinear and
    nearest, every all-zero patch is counted (fourier leaves ringing of order 1e-8, and a
    nearest patch whose edge falls on a half-pixel tie may round either way)."""
    from ptycho import extract_patches

    x = np.concatenate([np.arange(-40, 50, 0.25), np.random.default_rng(0).uniform(-40, 50, 99)])
    y = np.full_like(x, 5.0)
    patches = extract_patches(
        np.ones((10, 10), np.complex64), np.stack([x, y], 1), N, interpolation
    )
    largest = np.abs(patches.numpy()).reshape(len(x), -1).max(axis=1)
    counted = np.array(
        [
            any(
                "miss" in m
                for m in scan_warnings((10, 10), [p], [5.0], N, interpolation=interpolation)
            )
            for p in x
        ]
    )
    assert (largest[counted] == 0).all()
    first, last = -(N // 2), N - 1 - N // 2
    ties = (x + last == -0.5) | (x + first == 9.5) if interpolation == "nearest" else False
    if interpolation != "fourier":
        np.testing.assert_array_equal(counted | ties, (largest == 0) | ties)
    total = scan_warnings((10, 10), x, y, N, interpolation=interpolation)
    assert any(m.startswith(f"{counted.sum()} of {len(x)} scan positions give") for m in total)
