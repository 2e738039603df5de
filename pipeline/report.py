"""The evaluation report: per-case overlay pictures, a markdown summary and training curves.

``report.md`` holds the metrics table (model and, when scored, the threshold rule), the per-case
table with links to the overlay PNGs, the clinical volumes, what could not be scored, and the
training curves. Pictures are drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pipeline.baseline import threshold_rule  # noqa: E402
from pipeline.evaluation import EvaluationCase, EvaluationResult, read_volume  # noqa: E402
from pipeline.io import atomic_path, atomic_write_text  # noqa: E402

REPORT_NAME = "report.md"
CURVES_NAME = "training_curves.png"
CASES_FOLDER = "cases"
# Maps shown per case, in order; other modalities are drawn only when none of these exists.
PERFUSION_MAPS = ("CBF", "CBV", "MTT", "Tmax")
SKIPPED_MODALITIES = ("4DPWI",)
TRUTH_COLOUR = "#00e05a"
PREDICTION_COLOUR = "#ff3df5"
THRESHOLD_COLOUR = "#ffd000"
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


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Per-case overlays
# ---------------------------------------------------------------------------------------------
def lesion_slice(truth: np.ndarray, pred: np.ndarray | None = None) -> int:
    """The axial slice (last axis) with the most truth voxels; else the most predicted; else the middle."""
    for mask in (truth, pred):
        if mask is not None and mask.any():
            return int(np.argmax(mask.reshape(-1, mask.shape[-1]).sum(axis=0)))
    return truth.shape[-1] // 2


def _crop_box(planes: list[np.ndarray], margin: int = 6) -> tuple[slice, slice]:
    """The bounding box of the non-zero voxels of 2D planes (the head), with a margin."""
    shape = planes[0].shape
    occupied = np.zeros(shape, dtype=bool)
    for plane in planes:
        occupied |= plane != 0
    if not occupied.any():
        return slice(None), slice(None)
    box = []
    for axis in range(2):
        hits = np.flatnonzero(occupied.any(axis=1 - axis))
        box.append(slice(max(0, int(hits[0]) - margin), min(shape[axis], int(hits[-1]) + margin + 1)))
    return box[0], box[1]


def _overlay_maps(case: EvaluationCase, shape: tuple[int, ...]) -> list[tuple[str, np.ndarray | None]]:
    names = [m for m in PERFUSION_MAPS if case.modality(m)]
    if not names:
        names = [m for m in case.modalities if m not in SKIPPED_MODALITIES]
    maps: list[tuple[str, np.ndarray | None]] = []
    for name in names:
        try:
            data, _ = read_volume(case.modality(name))
        except (FileNotFoundError, ValueError):
            continue
        if data.shape == shape:
            maps.append((name, np.nan_to_num(np.asarray(data, dtype=np.float64))))
    return maps or [("no image maps known", None)]


def plot_case_overlay(
    case: EvaluationCase,
    prediction: str | Path,
    out_png: str | Path,
    threshold: bool = False,
    title: str | None = None,
) -> Path:
    """Draw each channel map of a case on its most-lesioned slice with prediction and truth contours.

    One panel per map (CBF, CBV, MTT, Tmax when the case's modalities have them; otherwise its other
    3D modalities on the mask grid; a blank panel when none is known), grey-scaled between the 1st
    and 99th percentiles of the slice's non-zero values, with a colour bar, the truth contour in
    green, the prediction in magenta and, with ``threshold``, the threshold rule's core in dashed
    yellow; a legend below.

    Args:
        case: the case (its ``label`` and ``modalities`` are read).
        prediction: the predicted mask on the truth's grid.
        out_png: the PNG to write (atomically).
        threshold: also draw the threshold rule's core (needs the CBF and Tmax maps).
        title: the start of the figure title (the slice is appended); default the case name.

    Returns:
        ``out_png``.

    Raises:
        FileNotFoundError, ValueError: the mask files cannot be read, or differ in shape.
    """
    truth, geometry = read_volume(case.label)
    pred, _ = read_volume(prediction)
    truth, pred = truth != 0, pred != 0
    if truth.shape != pred.shape:
        raise ValueError(f"{prediction}: shape {pred.shape} differs from the truth {case.label} {truth.shape}")
    if truth.ndim == 2:
        truth, pred = truth[..., None], pred[..., None]
    z = lesion_slice(truth, pred)
    maps = _overlay_maps(case, truth.shape)
    core = None
    if threshold:
        by_name = dict(maps)
        cbf = by_name.get("CBF")
        tmax = by_name.get("Tmax")
        if cbf is not None and tmax is not None:
            try:
                core = threshold_rule(cbf, tmax) != 0
            except ValueError:
                core = None
    spacing = geometry.spacing
    aspect = float(spacing[1] / spacing[0]) if len(spacing) > 1 and spacing[0] > 0 else 1.0
    crop = _crop_box([m[:, :, z] for _, m in maps if m is not None] + [truth[:, :, z], pred[:, :, z]])
    fig, axes = plt.subplots(1, len(maps), figsize=(3.6 * len(maps), 4.2), squeeze=False)
    for ax, (name, data) in zip(axes[0], maps):
        if data is None:
            ax.imshow(np.zeros(truth.shape[:2])[crop].T, cmap="gray", origin="lower", aspect=aspect, vmin=0, vmax=1)
        else:
            plane = data[:, :, z][crop]
            inside = plane[plane != 0]
            low, high = (np.percentile(inside, [1, 99]) if inside.size else (0.0, 1.0))
            if not high > low:
                low, high = low - 1.0, high + 1.0
            shown = ax.imshow(plane.T, cmap="gray", origin="lower", aspect=aspect, vmin=low, vmax=high)
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        for mask, colour, style in ((truth, TRUTH_COLOUR, "solid"), (pred, PREDICTION_COLOUR, "solid"),
                                    (core, THRESHOLD_COLOUR, "dashed")):
            if mask is not None and mask[:, :, z][crop].any():
                ax.contour(mask[:, :, z][crop].T.astype(float), levels=[0.5], colors=[colour], linewidths=1.4,
                           linestyles=style)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Line2D([0], [0], color=TRUTH_COLOUR, lw=2, label="ground truth"),
        Line2D([0], [0], color=PREDICTION_COLOUR, lw=2, label="prediction"),
    ]
    if core is not None:
        handles.append(Line2D([0], [0], color=THRESHOLD_COLOUR, lw=2, ls="--", label="threshold rule"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.02))
    where = f"slice {z + 1} of {truth.shape[-1]}"
    fig.suptitle(f"{title}, {where}" if title else f"{case.key}: {where}")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return _save(fig, Path(out_png))


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------
def _event_folders(path: Path) -> list[Path]:
    if path.is_file():
        return [path.parent] if path.name.startswith("events.out.tfevents") else []
    return sorted({p.parent for p in path.rglob("events.out.tfevents*") if p.is_file()})


def _csv_logs(path: Path) -> list[Path]:
    candidates = [path] if path.is_file() else sorted(path.rglob("*.csv"))
    found = []
    for candidate in candidates:
        if candidate.suffix.lower() != ".csv":
            continue
        try:
            with open(candidate, newline="") as f:
                header = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError):
            continue
        if "epoch" in [h.strip().lower() for h in header]:
            found.append(candidate)
    return found


def read_training_scalars(paths: Sequence[str | Path]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Read every scalar of the training logs found under ``paths``.

    TensorBoard event files are read with ``EventAccumulator`` (one run per folder holding event
    files); a CSV with an ``epoch`` column gives one tag per other numeric column, against the epoch.

    Args:
        paths: folders (searched recursively) or files: event files or CSV files.

    Returns:
        ``{tag: {run: [(step or epoch, value), ...]}}``, runs named by their path relative to the
        given one; empty when no log is found.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for given in paths:
        given = Path(given)
        if not given.exists():
            raise FileNotFoundError(f"training log {str(given)!r} not found")
        base = given if given.is_dir() else given.parent
        for folder in _event_folders(given):
            run = str(folder.relative_to(base)) if folder != base else base.name
            accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
            accumulator.Reload()
            for tag in accumulator.Tags().get("scalars", []):
                events = accumulator.Scalars(tag)
                scalars.setdefault(tag, {})[run] = [(float(e.step), float(e.value)) for e in events]
        for table in _csv_logs(given):
            run = str(table.relative_to(base)) if table != given else table.name
            with open(table, newline="") as f:
                rows = list(csv.DictReader(f))
            if not rows:
                continue
            epoch_key = next(k for k in rows[0] if k.strip().lower() == "epoch")
            for column in rows[0]:
                if column == epoch_key:
                    continue
                points = []
                for row in rows:
                    try:
                        points.append((float(row[epoch_key]), float(row[column])))
                    except (TypeError, ValueError):
                        continue
                if points:
                    scalars.setdefault(column.strip(), {})[run] = points
    return scalars


def plot_training_curves(scalars: dict[str, dict[str, list[tuple[float, float]]]], out_png: str | Path) -> Path:
    """Plot every scalar tag in its own panel, one line per run, and write the PNG atomically.

    Args:
        scalars: as :func:`read_training_scalars` returns (must not be empty).
        out_png: the PNG to write.

    Returns:
        ``out_png``.

    Raises:
        ValueError: ``scalars`` is empty.
    """
    if not scalars:
        raise ValueError("no training scalars to plot")
    tags = sorted(scalars)
    columns = min(3, len(tags))
    rows = math.ceil(len(tags) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        for run, points in sorted(scalars[tag].items()):
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if len(points) < 30 else None, ms=3, label=run)
        ax.set_title(tag)
        ax.set_xlabel("step / epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(scalars[tag]) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, Path(out_png))


# ---------------------------------------------------------------------------------------------
# The markdown report
# ---------------------------------------------------------------------------------------------
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
