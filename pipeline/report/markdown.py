"""``report.md``: the metrics table (model and, when scored, the threshold rule), the per-case table with
links to the overlay PNGs, the clinical volumes, what could not be scored, and the training curves."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.evaluation import EvaluationResult
from pipeline.io import atomic_write_text
from pipeline.report.curves import plot_training_curves, read_training_scalars
from pipeline.report.overlays import plot_case_overlay

REPORT_NAME = "report.md"
CURVES_NAME = "training_curves.png"
CASES_FOLDER = "cases"
_TABLE_METRICS = (
    ("dice", "Dice"),
    ("hd95_mm", "HD95 (mm)"),
    ("assd_mm", "ASSD (mm)"),
    ("abs_volume_diff_ml", "AVD (mL)"),
    ("lesion_f1", "lesion F1"),
    ("lesion_count_diff", "lesion count diff"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("pred_volume_ml", "predicted volume (mL)"),
    ("truth_volume_ml", "true volume (mL)"),
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or value == "":
        return "n/a"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "n/a"
    if math.isinf(number):
        return "inf"
    return f"{number:.{digits}f}"


def safe_name(name: str) -> str:
    """A file-name-safe version of a case name (``testing/case_1`` -> ``testing__case_1``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "__", name).strip("_") or "case"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def _summary_section(summary: dict[str, Any]) -> list[str]:
    methods = list(summary.get("methods", {}))
    if not methods:
        return ["No case was scored."]
    header = ["metric"]
    for method in methods:
        header += [f"{method} mean ± std", f"{method} median"]
    rows = []
    for name, label in _TABLE_METRICS:
        row = [label]
        for method in methods:
            stats = summary["methods"][method]["metrics"].get(name, {})
            undefined = f" ({stats['n_undefined']} n/a)" if stats.get("n_undefined") else ""
            row += [f"{_fmt(stats.get('mean'))} ± {_fmt(stats.get('std'))}{undefined}", _fmt(stats.get("median"))]
        rows.append(row)
    lines = _markdown_table(header, rows)
    cases = ", ".join(f"{m}: {summary['methods'][m]['cases']} case(s)" for m in methods)
    lines += ["", f"Scored {cases}."]
    difference = summary.get("dice_difference")
    if difference:
        lines += [
            "",
            f"Mean Dice, model minus threshold rule: **{difference['model_minus_threshold']:+.3f}** "
            f"({difference['model_mean_dice']:.3f} vs {difference['threshold_mean_dice']:.3f} over "
            f"{difference['cases']} case(s) scored by both).",
        ]
    return lines


def write_report(
    out_dir: str | Path,
    result: EvaluationResult | None = None,
    logs: Sequence[str | Path] = (),
    title: str = "Stroke-lesion segmentation: evaluation report",
) -> Path:
    """Write ``report.md`` with overlay PNGs (``cases/<case>.png``) and training curves.

    Args:
        out_dir: the report folder (created).
        result: an evaluation (from :func:`pipeline.evaluation.evaluate_predictions`, or
            :func:`pipeline.evaluation.load_result` for one written earlier); ``None`` for a report
            of the training curves only.
        logs: training-log folders or files (TensorBoard event files, CSV with an ``epoch`` column);
            every scalar tag found is plotted in ``training_curves.png``.
        title: the report's heading.

    Returns:
        The path of ``report.md``.

    Raises:
        FileNotFoundError: a log path does not exist.
        ValueError: neither an evaluation nor any training scalar is given.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scalars = read_training_scalars(logs) if logs else {}
    if result is None and not scalars:
        raise ValueError("nothing to report: give an evaluation or training logs holding scalars")
    lines = [f"# {title}", ""]
    pictures: list[tuple[str, str]] = []
    problems: list[str] = []
    if result is not None:
        summary = result.summary
        lines += [
            f"- predictions: `{summary.get('prediction_dir', '')}`",
            f"- truth: `{summary.get('truth', '')}` ({summary.get('truth_kind', '')})",
        ]
        if summary.get("images"):
            lines.append(f"- images: `{summary['images']}`")
        if summary.get("baseline"):
            lines.append(f"- baseline: {summary['baseline']} rule (rCBF < 30 % and Tmax > 6 s)")
        counts = summary.get("counts", {})
        if counts:
            lines.append("- " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()))
        lines += ["", "## Metrics", ""] + _summary_section(summary)
        lines += [
            "",
            "Dice and lesion F1 are 1.0 when both masks are empty; HD95 and ASSD are undefined (n/a) when "
            "either mask is empty and left out of the statistics; std is the sample standard deviation.",
        ]

        with_threshold = any(r["method"] == "threshold" for r in result.rows)
        by_case: dict[str, dict[str, dict[str, Any]]] = {}
        for row in result.rows:
            by_case.setdefault(row["case_id"], {})[row["method"]] = row
        for case, prediction in result.pairs:
            png = Path(CASES_FOLDER) / f"{safe_name(case.key)}.png"
            scores = by_case.get(case.key, {})
            caption = f"{case.key}: Dice {_fmt(scores.get('model', {}).get('dice'))}"
            if with_threshold:
                caption += f" (threshold rule {_fmt(scores.get('threshold', {}).get('dice'))})"
            try:
                plot_case_overlay(case, prediction, out_dir / png, threshold=with_threshold, title=caption)
                pictures.append((case.key, png.as_posix()))
            except (FileNotFoundError, ValueError) as err:
                problems.append(f"{case.key}: no overlay ({err})")
        links = dict(pictures)
        header = ["case", "status", "Dice"] + (["threshold Dice"] if with_threshold else [])
        header += ["HD95 (mm)", "AVD (mL)", "lesion F1", "lesion count diff", "overlay"]
        table = []
        for case_id, methods in by_case.items():
            model = methods.get("model", {})
            row = [case_id, str(model.get("status", "")), _fmt(model.get("dice"))]
            if with_threshold:
                row.append(_fmt(methods.get("threshold", {}).get("dice")))
            row += [_fmt(model.get("hd95_mm"), 2), _fmt(model.get("abs_volume_diff_ml"), 2),
                    _fmt(model.get("lesion_f1")), _fmt(model.get("lesion_count_diff"), 0)]
            row.append(f"[png]({links[case_id]})" if case_id in links else "")
            table.append(row)
        lines += ["", "## Per case", ""] + _markdown_table(header, table)

        if result.clinical:
            lines += [
                "", "## Clinical volumes", "",
                "Predicted core, hypoperfusion (Tmax > 6 s), mismatch (hypoperfusion minus core) and mismatch "
                "ratio (hypoperfusion / core; inf when the predicted core is empty).", "",
            ]
            lines += _markdown_table(
                ["case", "core (mL)", "Tmax > 6 s (mL)", "mismatch (mL)", "mismatch ratio", "true core (mL)"],
                [[r["case_id"], _fmt(r["core_ml"], 1), _fmt(r["hypoperfusion_ml"], 1), _fmt(r["mismatch_ml"], 1),
                  _fmt(r["mismatch_ratio"], 2), _fmt(r.get("truth_core_ml"), 1)] for r in result.clinical],
            )

        unscored = [f"prediction without truth: `{u['prediction']}` ({u['reason']})" for u in result.unmatched_predictions]
        unscored += [f"truth without prediction: {m['case_id']} (`{m['truth']}`)" for m in result.missing_predictions]
        unscored += [f"failed ({f['method']}): {f['error']}" for f in result.failures]
        unscored += problems
        if unscored:
            lines += ["", "## Not scored or not drawn", ""] + [f"- {u}" for u in unscored]

        if pictures:
            lines += ["", "## Overlays", "",
                      "Ground truth in green, prediction in magenta"
                      + (", threshold rule dashed yellow" if with_threshold else "")
                      + "; each map on the slice with the most lesion.", ""]
            for case_id, png in pictures:
                lines += [f"### {case_id}", "", f"![{case_id}]({png})", ""]

    if scalars:
        plot_training_curves(scalars, out_dir / CURVES_NAME)
        lines += ["", "## Training curves", "", f"Tags: {', '.join(sorted(scalars))}.", "",
                  f"![training curves]({CURVES_NAME})", ""]
    elif logs:
        lines += ["", "## Training curves", "", "No scalar found in the training logs given.", ""]
    return atomic_write_text(out_dir / REPORT_NAME, "\n".join(lines).rstrip() + "\n")
