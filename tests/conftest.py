"""Shared fixtures and legacy-state hygiene for the test suite."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


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


@pytest.fixture(autouse=True)
def _restore_keras_policy():
    import keras

    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)
