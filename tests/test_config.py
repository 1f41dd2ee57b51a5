"""Configuration dataclasses, the legacy dictionary, and precedence."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from ptycho import params, raw_data
from ptycho.config import config as config_module
from ptycho.config.config import ModelConfig, TrainingConfig, update_legacy_dict


def test_defaults():
    model = ModelConfig()
    assert (model.N, model.gridsize, model.use_batched_patch_extraction) == (64, 1, True)
    training = TrainingConfig()
    assert training.model == ModelConfig() and training.nepochs > 0 and training.batch_size > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"N": 0}, ValueError, "N=0"),
        ({"N": 3.5}, TypeError, "N=3.5"),
        ({"N": True}, TypeError, "N=True"),
        ({"gridsize": -1}, ValueError, "gridsize=-1"),
        ({"use_batched_patch_extraction": "yes"}, TypeError, "use_batched_patch_extraction='yes'"),
    ],
)
def test_model_config_validates(kwargs, error, text):
    with pytest.raises(error, match=text):
        ModelConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"nepochs": 0}, ValueError, "nepochs=0"),
        ({"batch_size": "8"}, TypeError, "batch_size='8'"),
        ({"model": {"N": 4}}, TypeError, "model of type dict"),
    ],
)
def test_training_config_validates(kwargs, error, text):
    with pytest.raises(error, match=text):
        TrainingConfig(**kwargs)


def test_update_legacy_dict_copies_and_skips_none(legacy_cfg):
    config = TrainingConfig(model=ModelConfig(N=32, gridsize=2), nepochs=3, batch_size=4)
    target = {"N": 1, "other": "kept"}
    update_legacy_dict(target, config)
    assert target == {
        "N": 32,
        "gridsize": 2,
        "use_batched_patch_extraction": True,
        "nepochs": 3,
        "batch_size": 4,
        "other": "kept",
    }
    model = ModelConfig(N=16)
    object.__setattr__(model, "gridsize", None)  # as a partially filled config would be
    target = {"gridsize": 3}
    update_legacy_dict(target, model)
    assert target["gridsize"] == 3 and target["N"] == 16


def test_update_legacy_dict_rejects_other_types():
    with pytest.raises(TypeError, match="config of type dict"):
        update_legacy_dict({}, {"N": 3})


def test_params_module(legacy_cfg):
    params.set("N", 128)
    assert params.get("N") == 128 and params.cfg["N"] == 128
    snapshot = params.params()
    snapshot["N"] = 1
    assert params.get("N") == 128  # params() is a copy
    with pytest.raises(ValueError, match="gridsize=0"):
        params.set("gridsize", 0)
    with pytest.raises(KeyError, match="no key 'missing'"):
        params.get("missing")


def test_precedence_explicit_config_legacy_default(legacy_cfg):
    resolve = params.resolve  # the legacy entry points' precedence
    config = ModelConfig(N=32, gridsize=2)
    legacy_cfg.update(N=16, gridsize=3)
    assert resolve("N", 8, config) == 8  # explicit wins
    assert resolve("N", None, config) == 32  # then config
    assert resolve("N", None, TrainingConfig(model=config)) == 32
    assert resolve("N") == 16  # then the legacy dictionary
    del legacy_cfg["N"]
    assert resolve("N") == params.DEFAULTS["N"]  # then the defaults


def test_config_resolve_reads_only_the_legacy_mapping_it_is_given(legacy_cfg):
    legacy_cfg.update(N=16)
    assert config_module.resolve("N") == config_module.DEFAULTS["N"]
    assert config_module.resolve("N", None, None, {"N": 12}) == 12
    assert config_module.resolve("N", None, ModelConfig(N=32), {"N": 12}) == 32
    with pytest.raises(ValueError, match="N=0"):
        config_module.resolve("N", None, None, {"N": 0})


def test_the_defaults_are_the_dataclass_defaults():
    assert params.DEFAULTS is config_module.DEFAULTS
    model, training = ModelConfig(), TrainingConfig()
    assert dict(config_module.DEFAULTS) == {
        **{f.name: getattr(model, f.name) for f in dataclasses.fields(model)},
        "nepochs": training.nepochs,
        "batch_size": training.batch_size,
    }
    with pytest.raises(TypeError):
        config_module.DEFAULTS["N"] = 1  # read-only: one set of defaults


def test_config_does_not_import_the_legacy_dictionary():
    """`ptycho.params` builds on `ptycho.config.config`, never the other way round."""
    code = (
        "import sys\n"
        "from ptycho.config import config\n"
        "config.resolve('N'); config.resolve('N', None, config.TrainingConfig(), {})\n"
        "config.update_legacy_dict({}, config.TrainingConfig())\n"
        "assert 'ptycho.params' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_precedence_at_get_image_patches(rng, legacy_cfg):
    legacy_cfg.update(N=10, gridsize=3)
    obj = np.ones((20, 20), np.complex64)
    offsets = np.full((2, 1, 2, 1), 10.0, np.float32)
    local4 = np.zeros((2, 1, 2, 4), np.float32)
    local9 = np.zeros((2, 1, 2, 9), np.float32)
    assert raw_data.get_image_patches(obj, offsets, local9).shape == (2, 10, 10, 9)
    config = ModelConfig(N=6, gridsize=2)
    assert raw_data.get_image_patches(obj, offsets, local4, config=config).shape == (2, 6, 6, 4)
    assert raw_data.get_image_patches(obj, offsets, local4, N=4, config=config).shape == (
        2,
        4,
        4,
        4,
    )


def test_configs_are_dataclasses():
    assert {f.name for f in dataclasses.fields(ModelConfig)} == {
        "N",
        "gridsize",
        "use_batched_patch_extraction",
    }
    assert {f.name for f in dataclasses.fields(TrainingConfig)} == {
        "model",
        "nepochs",
        "batch_size",
    }
