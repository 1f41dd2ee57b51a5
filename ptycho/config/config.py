"""Configuration dataclasses: the settings, their defaults and their validation.

This module owns the defaults (the dataclass fields, gathered in :data:`DEFAULTS`) and
the checks of every setting. It knows nothing of the legacy `ptycho.params` dictionary,
which builds on it: a legacy mapping reaches :func:`resolve` only as an argument.

Precedence at the legacy entry points, highest first: explicit arguments, then a config
object, then the legacy dictionary, then :data:`DEFAULTS`.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = [
    "DEFAULTS",
    "ModelConfig",
    "TrainingConfig",
    "resolve",
    "update_legacy_dict",
    "validate_field",
]


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")


_VALIDATORS = {
    "N": _positive_int,
    "gridsize": _positive_int,
    "nepochs": _positive_int,
    "batch_size": _positive_int,
    "use_batched_patch_extraction": _flag,
}


def validate_field(name: str, value: Any) -> None:
    """Check a known configuration value; unknown keys are accepted as they are."""
    check = _VALIDATORS.get(name)
    if check is not None:
        check(name, value)


@dataclasses.dataclass
class ModelConfig:
    """Model geometry.

    Args:
        N: patch size in pixels.
        gridsize: patches per group along each axis; a group holds `gridsize**2` patches.
        use_batched_patch_extraction: use the batched XLA path (default) rather than the
            preserved per-patch loop.
    """

    N: int = 64
    gridsize: int = 1
    use_batched_patch_extraction: bool = True

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            validate_field(field.name, getattr(self, field.name))


@dataclasses.dataclass
class TrainingConfig:
    """Training settings.

    Args:
        model: the :class:`ModelConfig`.
        nepochs: number of training epochs.
        batch_size: groups per batch.
    """

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    nepochs: int = 50
    batch_size: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelConfig):
            raise TypeError(
                "`model` must be a ModelConfig. "
                f"Received: model of type {type(self.model).__name__}"
            )
        validate_field("nepochs", self.nepochs)
        validate_field("batch_size", self.batch_size)


def _flatten(config: Any) -> dict[str, Any]:
    if isinstance(config, TrainingConfig):
        values = _flatten(config.model)
        values.update(nepochs=config.nepochs, batch_size=config.batch_size)
        return values
    if isinstance(config, ModelConfig):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    raise TypeError(
        "`config` must be a ModelConfig or TrainingConfig. "
        f"Received: config of type {type(config).__name__}"
    )


#: Every setting's default, read-only: the field defaults of the dataclasses above.
DEFAULTS: Mapping[str, Any] = types.MappingProxyType(_flatten(TrainingConfig()))


def update_legacy_dict(cfg: MutableMapping[str, Any], config: Any) -> None:
    """Copy every non-`None` field of `config` into the legacy dictionary `cfg`.

    A :class:`TrainingConfig` contributes its own fields and those of its model.
    """
    for name, value in _flatten(config).items():
        if value is not None:
            cfg[name] = value


def resolve(
    name: str,
    explicit: Any = None,
    config: Any = None,
    legacy: Mapping[str, Any] | None = None,
) -> Any:
    """One setting by precedence: `explicit`, then `config`, then `legacy`, then the defaults.

    Args:
        name: the setting, a key of :data:`DEFAULTS`.
        explicit: the value passed by the caller, used unless `None`.
        config: an optional :class:`ModelConfig` or :class:`TrainingConfig`.
        legacy: an optional mapping consulted before the defaults; the legacy entry
            points pass `ptycho.params.cfg` (see :func:`ptycho.params.resolve`).

    Returns:
        The value, validated.
    """
    if explicit is not None:
        value = explicit
    else:
        value = None if config is None else _flatten(config).get(name)
        if value is None and legacy is not None:
            value = legacy.get(name)
        if value is None:
            value = DEFAULTS[name]
    validate_field(name, value)
    return value
