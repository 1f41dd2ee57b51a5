"""The fuzzing harness in CI, and a regression test for every failure it found."""

import sys
from pathlib import Path

import numpy as np
import pytest

from ptycho import patch_dataset, tf_helper
from ptycho.grouping import group_positions

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))


def test_ten_thousand_malformed_calls_end_in_a_result_or_a_clear_error():
    from fuzz_public import run

    report = run(cases=10_000, seed=0)
    counts = {}
    for outcomes in report["outcomes"].values():
        for outcome, count in outcomes.items():
            counts[outcome] = counts.get(outcome, 0) + count
    assert sum(counts.values()) == 10_000
    assert report["failures"] == [], report["failures"][:3]
    assert counts.get("result", 0) > 1000  # valid calls are in the mix, not only errors
    assert report["outcomes"]["ptycho-patches"].get("exit 0", 0) > 50
    # Every class of hostile input was exercised, with each kind of outcome it allows.
    hostile = {name: set(o) for name, o in report["outcomes"].items() if name.startswith("hostile")}
    assert hostile["hostile npz members"] >= {"DataError", "loaded", "loaded exactly"}
    assert hostile["hostile special paths"] >= {"input refused", "output refused", "output written"}
    assert len(hostile["hostile signals"]) >= 8  # one exit status per signal
    assert hostile["hostile extreme values"] == {"finite"}
    assert hostile["hostile graph NaN"] == {"InvalidArgumentError", "NaN patches"}


# Failures the harness found, each fixed.


def test_pad_refuses_an_output_larger_than_memory():
    """Was: TensorFlow's 'Encountered overflow when multiplying' InvalidArgumentError."""
    with pytest.raises(ValueError, match="more than the"):
        tf_helper.pad(np.ones((1, 3, 3, 1), np.float32), 10**12)


def test_patch_dataset_refuses_scalar_positions_and_targets():
    """Was: 'Attempting to slice scalar input' and an IndexError."""
    with pytest.raises(ValueError, match="positions"):
        patch_dataset(np.ones((8, 8)), np.float32(3.0), 2, 2)
    with pytest.raises(ValueError, match="targets"):
        patch_dataset(np.ones((8, 8)), np.zeros((4, 2)), 2, 2, targets=np.float32(1.0))


def test_patch_dataset_refuses_empty_positions():
    """Was: a dataset without batches, which fails later and obscurely."""
    with pytest.raises(ValueError, match="must not be empty"):
        patch_dataset(np.ones((8, 8)), np.zeros((0, 2)), 2, 2)


def test_group_positions_refuses_complex_coordinates_and_absurd_group_counts():
    """Was: a ComplexWarning and silently dropped imaginary parts; a MemoryError."""
    with pytest.raises(TypeError, match="real numbers"):
        group_positions(np.ones(5) + 1j, np.ones(5))
    with pytest.raises(ValueError, match="more than the"):
        group_positions(np.arange(20.0), np.arange(20.0), 2, n_groups=10**12)
