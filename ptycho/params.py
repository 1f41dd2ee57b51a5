"""The legacy PtychoPINN global configuration dictionary.

Kept so that existing scripts run unchanged. New code passes configuration explicitly
(:mod:`ptycho.config.config`) and never reads this dictionary; the library itself reads it
only at its legacy entry points, as the last fallback before the defaults.

This module is a thin layer over :mod:`ptycho.config.config`, which owns the defaults and
the validation and does not import this one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ptycho.config import config as _config

__all__ = ["DEFAULTS", "cfg", "get", "params", "resolve", "set"]

#: The defaults, read-only: :data:`ptycho.config.config.DEFAULTS`.
DEFAULTS: Mapping[str, Any] = _config.DEFAULTS

cfg: dict[str, Any] = dict(DEFAULTS)


def get(key: str) -> Any:
    """The value of `key`; a `KeyError` names keys that were never set."""
    if key not in cfg:
        raise KeyError(f"ptycho.params has no key {key!r}. Known keys: {sorted(cfg)}")
    return cfg[key]


def set(key: str, value: Any) -> None:  # noqa: A001 - the legacy name
    """Set `key`, validating the keys the library reads."""
    _config.validate_field(key, value)
    cfg[key] = value


def params() -> dict[str, Any]:
    """A copy of the whole dictionary."""
    return copy.deepcopy(cfg)


def resolve(name: str, explicit: Any = None, config: Any = None) -> Any:
    """One setting by precedence: `explicit`, then `config`, then :data:`cfg`, then the
    defaults (:func:`ptycho.config.config.resolve` with this dictionary as the legacy one)."""
    return _config.resolve(name, explicit, config, legacy=cfg)
