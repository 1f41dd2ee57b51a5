"""The targets of the performance issue, and the verdict on each measured figure."""

from __future__ import annotations

import operator
from typing import NamedTuple

__all__ = ["COMPARISONS", "TARGETS", "Target", "headline_figures", "verdicts"]


class Target(NamedTuple):
    """A figure's target; `stage` names the part of the run that measures the figure."""

    figure: str
    label: str
    comparison: str  # a key of COMPARISONS
    target: float
    unit: str
    stage: str  # "table", "checks" or "scaling"


COMPARISONS = {">=": operator.ge, "<=": operator.le}

TARGETS = (
    Target("layer_speedup_vs_loop", "eager layer over the legacy loop", ">=", 1000, "x", "table"),
    Target(
        "layer_fraction_of_copy",
        "eager layer, fraction of the copy's throughput",
        ">=",
        0.5,
        "",
        "table",
    ),
    Target(
        "layer_over_crop_and_resize",
        "eager layer over tf.image.crop_and_resize",
        ">=",
        2,
        "x",
        "table",
    ),
    Target("layer_eager_over_jit", "eager layer over the jitted layer", "<=", 1.5, "x", "table"),
    Target(
        "layer_speedup_vs_jax",
        "eager layer over a jitted JAX vmap of dynamic_slice",
        ">=",
        1,
        "x",
        "table",
    ),
    Target(
        "first_call_extra_s",
        "first call at a new object size, over a warm call",
        "<=",
        1,
        " s",
        "checks",
    ),
    Target(
        "new_count_call_over_warm",
        "call at a new count of positions, over warm",
        "<=",
        2,
        "x",
        "checks",
    ),
    Target("backward_ratio", "jitted forward+backward over forward", "<=", 3, "x", "checks"),
    Target(
        "scaling_per_patch_ratio",
        "time per patch at the large P over the default",
        "<=",
        1.3,
        "x",
        "scaling",
    ),
    Target(
        "scaling_eager_over_jit",
        "the eager layer over the jitted one there",
        "<=",
        1.5,
        "x",
        "scaling",
    ),
    Target(
        "scaling_fraction_of_copy",
        "the eager layer there, fraction of the copy's",
        ">=",
        0.5,
        "",
        "scaling",
    ),
    Target(
        "scaling_speedup_vs_jax",
        "the eager layer there over the JAX method",
        ">=",
        1,
        "x",
        "scaling",
    ),
    Target(
        "scaling_memory_ratio_layer_eager",
        "peak extra memory of the eager layer at the large P, less 100 MB, over the output",
        "<=",
        1.25,
        "x",
        "scaling",
    ),
    Target(
        "scaling_memory_ratio_get_image_patches",
        "the same for get_image_patches",
        "<=",
        1.25,
        "x",
        "scaling",
    ),
)


def headline_figures(rows: list[dict]) -> dict:
    """The table's figures that have targets, from the timed rows."""
    timed = {row["method"]: row for row in rows if "seconds" in row}
    figures = {}
    if "layer_eager" in timed:
        layer = timed["layer_eager"]
        figures["layer_speedup_vs_loop"] = layer["speedup_vs_loop"]
        figures["layer_fraction_of_copy"] = layer["fraction_of_copy"]
        if "crop_and_resize" in timed:
            figures["layer_over_crop_and_resize"] = (
                timed["crop_and_resize"]["seconds"] / layer["seconds"]
            )
        if "layer_jit" in timed:
            figures["layer_eager_over_jit"] = layer["seconds"] / timed["layer_jit"]["seconds"]
        if "jax_vmap" in timed:
            figures["layer_speedup_vs_jax"] = timed["jax_vmap"]["seconds"] / layer["seconds"]
    return figures


def verdicts(figures: dict, skipped: dict[str, str] | None = None) -> list[dict]:
    """PASS or SHORT for every target whose figure was measured; SKIPPED otherwise.

    `skipped` maps a stage that did not run to the reason, which a SKIPPED verdict gives.
    """
    results = []
    for target in TARGETS:
        value = figures.get(target.figure)
        result = {
            "figure": target.figure,
            "label": target.label,
            "value": value,
            "target": f"{target.comparison} {target.target}{target.unit}",
        }
        if value is None:
            result["verdict"] = "SKIPPED"
            result["reason"] = (skipped or {}).get(target.stage, "not measured")
        else:
            passed = COMPARISONS[target.comparison](value, target.target)
            result["verdict"] = "PASS" if passed else "SHORT"
        results.append(result)
    return results
