"""Explicit configuration dataclasses (see :mod:`ptycho.config.config`)."""

from ptycho.config.config import ModelConfig, TrainingConfig, update_legacy_dict

__all__ = ["ModelConfig", "TrainingConfig", "update_legacy_dict"]
