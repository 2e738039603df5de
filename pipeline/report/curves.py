"""Training curves: every scalar of the TensorBoard event files and CSV logs of a training, one panel per tag."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from pipeline.report.figures import _save, plt


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
