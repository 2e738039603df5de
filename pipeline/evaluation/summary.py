"""The summary of per-case rows: statistics per method and metric, and its short text table."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from pipeline.evaluation.result import METHODS
from pipeline.metrics import METRIC_NAMES


def _statistics(values: list[float]) -> dict[str, Any]:
    finite = np.asarray(
        [v for v in values if isinstance(v, (int, float, np.number)) and math.isfinite(v)], dtype=np.float64
    )
    if finite.size == 0:
        return {"mean": None, "median": None, "std": None, "n": 0, "n_undefined": len(values)}
    return {
        "mean": float(finite.mean()),
        "median": float(np.median(finite)),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "n": int(finite.size),
        "n_undefined": len(values) - int(finite.size),
    }


def summarize(rows: Sequence[dict[str, Any]], counts: dict[str, int] | None = None) -> dict[str, Any]:
    """Summary statistics of per-case rows.

    For each method, each metric's mean, median and sample standard deviation (ddof=1; 0.0 for one
    value) over the ``ok`` rows whose value is finite; ``n`` counts those values and ``n_undefined``
    the ``ok`` rows where the metric is NaN (surface distances with an empty mask). When both
    methods are present, ``dice_difference`` is the mean Dice of the model minus that of the
    threshold rule over the cases both scored.

    Args:
        rows: rows as in :attr:`EvaluationResult.rows`.
        counts: extra counts to record under ``counts``.

    Returns:
        ``{"counts": {...}, "methods": {method: {"cases": n, "metrics": {metric: stats}}},
        "dice_difference": {...} (when both methods are present)}``.
    """
    summary: dict[str, Any] = {"counts": dict(counts or {}), "methods": {}}
    for method in METHODS:
        scored = [r for r in rows if r["method"] == method and r["status"] == "ok"]
        if not scored and not any(r["method"] == method for r in rows):
            continue
        summary["methods"][method] = {
            "cases": len(scored),
            "failed": sum(1 for r in rows if r["method"] == method and r["status"] == "failed"),
            "metrics": {name: _statistics([r[name] for r in scored]) for name in METRIC_NAMES},
        }
    if all(m in summary["methods"] for m in METHODS):
        model = {r["case_id"]: r["dice"] for r in rows if r["method"] == "model" and r["status"] == "ok"}
        threshold = {r["case_id"]: r["dice"] for r in rows if r["method"] == "threshold" and r["status"] == "ok"}
        both = [c for c in model if c in threshold]
        if both:
            mean_model = float(np.mean([model[c] for c in both]))
            mean_threshold = float(np.mean([threshold[c] for c in both]))
            summary["dice_difference"] = {
                "model_mean_dice": mean_model,
                "threshold_mean_dice": mean_threshold,
                "model_minus_threshold": mean_model - mean_threshold,
                "cases": len(both),
            }
    return summary


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


SHOWN_METRICS = ("dice", "hd95_mm", "assd_mm", "abs_volume_diff_ml", "lesion_f1", "lesion_count_diff",
                 "precision", "recall")


def format_summary(summary: dict[str, Any]) -> str:
    """A short text table of a summary: per metric, mean +- std (median) per method, and the counts."""
    methods = list(summary.get("methods", {}))
    lines = []
    counts = summary.get("counts", {})
    if counts:
        lines.append("  " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()))
    if methods:
        header = ["metric"] + [f"{m} mean +- std (median)" for m in methods]
        table = [header]
        for name in SHOWN_METRICS:
            cells = [name]
            for method in methods:
                stats = summary["methods"][method]["metrics"][name]
                if stats["n"] == 0:
                    cells.append("n/a")
                else:
                    cells.append(f"{_format(stats['mean'])} +- {_format(stats['std'])} ({_format(stats['median'])})"
                                 + (f" [{stats['n_undefined']} n/a]" if stats["n_undefined"] else ""))
            table.append(cells)
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            lines.append(("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths))).rstrip())
    difference = summary.get("dice_difference")
    if difference:
        lines.append(
            f"  mean Dice, model minus threshold rule: {difference['model_minus_threshold']:+.3f} "
            f"({difference['model_mean_dice']:.3f} vs {difference['threshold_mean_dice']:.3f} over "
            f"{difference['cases']} cases)"
        )
    return "\n".join(lines)
