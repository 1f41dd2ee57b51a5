"""Shared fixtures and legacy-state hygiene for the test suite.

`test_<module>.py` tests `ptycho/<module>.py` (or `ptycho/_<module>.py`), and
`test_<module>_<topic>.py` one topic of it: `test_ops_reassemble.py`, `test_kernel_fourier.py`,
`test_windows_gradients.py`, `test_cli_training_file.py`. The other files test one property
across modules: `test_modes.py` (every public op in every execution mode), `test_properties.py`
(hypothesis), `test_extreme_values.py`, `test_limits.py` (resources), `test_fuzz.py` and
`fuzz/`, `test_distribute.py`, and the documents (`test_readme.py`, `test_docs.py`,
`test_notebooks.py`). `support.py` holds the float64 oracles and helpers.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from support import MODES, Mode


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def legacy_cfg():
    """Give a test the legacy dictionary and restore it afterwards."""
    from ptycho import params

    saved = dict(params.cfg)
    yield params.cfg
    params.cfg.clear()
    params.cfg.update(saved)


@pytest.fixture(params=MODES)
def mode(request):
    """Each execution mode in turn, as a :class:`support.Mode`: `mode(fn)` runs `fn`
    eagerly, in a `tf.function`, or in a `tf.function(jit_compile=True)`. Pick some modes
    with `@pytest.mark.parametrize("mode", ["eager", "jit"], indirect=True)`."""
    return Mode(request.param)


@pytest.fixture(autouse=True)
def _restore_keras_policy():
    import keras

    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


# Property-based tests: a bounded, reproducible run in CI; `HYPOTHESIS_PROFILE=long` for more.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "long",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
