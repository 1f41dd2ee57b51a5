"""The `python -m ptycho` demonstration and the built-in data."""

import numpy as np

from ptycho.__main__ import main
from ptycho.demo import demo_object, demo_scan


def test_demo_runs_and_reports_agreement(capsys):
    assert main(["--size", "96", "--N", "16", "--groups", "8", "--loop-patches", "8"]) == 0
    out = capsys.readouterr().out
    assert "speedup:" in out
    diff = float(out.split("max |batched - loop|")[1].split(":")[1].split()[0])
    assert diff <= 1e-6


def test_demo_rejects_bad_arguments(capsys):
    assert main(["--N", "0"]) == 2
    assert "--N must be >= 1" in capsys.readouterr().err


def test_demo_data_is_deterministic_and_structured():
    obj = demo_object(64)
    assert obj.dtype == np.complex64 and obj.shape == (64, 64)
    np.testing.assert_array_equal(obj, demo_object(64))
    assert np.ptp(np.abs(obj)) > 0.3 and np.ptp(np.angle(obj)) > 1
    scan = demo_scan(64, 50, seed=3)
    assert scan.shape == (50, 2)
    np.testing.assert_array_equal(scan, demo_scan(64, 50, seed=3))
    assert scan.min() > -10 and scan.max() < 74
