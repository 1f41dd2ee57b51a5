"""The legacy PtychoPINN global configuration dictionary.

Kept so that existing scripts run unchanged. New code passes configuration explicitly
(:mod:`ptycho.config.config`) and never reads this dictionary; the library itself reads it
only at its legacy entry points, as the last fallback before the defaults.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["DEFAULTS", "cfg", "get", "params", "set"]

DEFAULTS: dict[str, Any] = {
    "N": 64,
    "gridsize": 1,
    "use_batched_patch_extraction": True,
    "nepochs": 50,
    "batch_size": 16,
}

cfg: dict[str, Any] = dict(DEFAULTS)


def get(key: str) -> Any:
    """The value of `key`; a `KeyError` names keys that were never set."""
    if key not in cfg:
        raise KeyError(f"ptycho.params has no key {key!r}. Known keys: {sorted(cfg)}")
    return cfg[key]


def set(key: str, value: Any) -> None:  # noqa: A001 - the legacy name
    """Set `key`, validating the keys the library reads."""
    from ptycho.config.config import validate_field

    validate_field(key, value)
    cfg[key] = value


def params() -> dict[str, Any]:
    """A copy of the whole dictionary."""
    return copy.deepcopy(cfg)
