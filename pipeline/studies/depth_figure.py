"""The depth study's figure, after the UNet++ article's bar charts: mean test Dice per model with the spread over
seeds as error bars and the parameter count written above each bar, beside the inference time per case."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from pipeline.io import atomic_path  # noqa: E402
from pipeline.studies.depth_report import format_parameters  # noqa: E402

__all__ = ["FAMILY_COLOURS", "write_figure"]

FAMILY_COLOURS = {"fcn": "#9e9e9e", "unet": "#4c72b0", "unetpp": "#dd8452"}


def _family(model: str) -> str:
    return "unetpp" if model.startswith("unetpp") else "unet" if model.startswith("unet") else "fcn"


def _errors(summary: Sequence[Mapping[str, Any]], key: str) -> list[float] | None:
    values = [s[key] for s in summary]
    return None if any(math.isnan(v) for v in values) else values


def write_figure(path: str | Path, summary: Sequence[Mapping[str, Any]]) -> Path:
    """Draw the study's bar chart and write it as a PNG, atomically.

    Args:
        path: the PNG to write (``depth_study.png``).
        summary: :func:`pipeline.studies.depth_report.summarise`'s entries, in table order.

    Returns:
        ``path``.

    Raises:
        ValueError: an empty summary.
    """
    if not summary:
        raise ValueError("no models to draw")
    path = Path(path)
    labels = [s["label"] for s in summary]
    colours = [FAMILY_COLOURS[_family(s["model"])] for s in summary]
    x = range(len(summary))
    seeds = min(s["seeds"] for s in summary)
    fig, (dice_axis, time_axis) = plt.subplots(1, 2, figsize=(max(9.0, 0.9 * len(summary) + 4), 4.8),
                                               gridspec_kw={"width_ratios": [3, 2]})
    dice = [s["dice_mean"] for s in summary]
    dice_axis.bar(x, dice, color=colours, yerr=_errors(summary, "dice_sd"), capsize=4, edgecolor="black",
                  linewidth=0.5)
    top = max(s["dice_max"] for s in summary)
    for i, s in enumerate(summary):
        dice_axis.text(i, max(s["dice_max"], s["dice_mean"]) + 0.02 * max(top, 0.05),
                       format_parameters(s["parameters"]), ha="center", va="bottom", fontsize=8)
    dice_axis.axhline(summary[0]["rule_dice_mean"], color="black", linestyle="--", linewidth=1,
                      label="clinical threshold rule")
    dice_axis.set_ylim(0, min(1.0, max(top, summary[0]["rule_dice_mean"]) * 1.25 + 0.02))
    dice_axis.set_ylabel("mean test Dice" + (f" (± sd over {seeds} seeds)" if seeds > 1 else " (one seed)"))
    dice_axis.set_title("Dice; parameters above the bars")
    dice_axis.legend(loc="upper left", fontsize=8)
    time_axis.bar(x, [s["seconds_per_case"] for s in summary], color=colours, edgecolor="black", linewidth=0.5)
    time_axis.set_ylabel("inference seconds per case")
    time_axis.set_title("Inference time, side by side")
    for axis in (dice_axis, time_axis):
        axis.set_xticks(list(x))
        axis.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path
