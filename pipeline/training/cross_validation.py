"""``train --fold cv`` (or a list of folds): the folds of a datalist trained one after another, as nnU-Net trains
its five folds, each into ``OUTPUT/fold_<k>/``, and the summary of their validation Dice
(``OUTPUT/cross_validation.json`` and ``.csv``). ``predict --model OUTPUT`` ensembles the fold runs."""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.data.datalist import ALL_FOLDS, CROSS_VALIDATION
from pipeline.predict.models import FINAL_MODEL, FOLD_PREFIX, run_checkpoint

__all__ = ["SUMMARY_NAME", "fold_summary", "run_cross_validation", "training_folds", "write_fold_summary"]

SUMMARY_NAME = "cross_validation"


def training_folds(fold: int | str | Sequence[int], datalist: str | Path) -> list[int] | None:
    """The folds a ``train`` run trains one after another, or ``None`` for a single run.

    Args:
        fold: ``--fold``: an int or ``"all"`` (one run), ``"cv"`` (every fold of the datalist) or a list of folds.
        datalist: the run's datalist (``cv`` reads its number of folds).

    Returns:
        The folds in order, or ``None``.

    Raises:
        ValueError: ``cv`` on a datalist with fewer than two folds, or a listed fold the datalist does not have.
        FileNotFoundError: no such datalist.
    """
    if isinstance(fold, int) or fold == ALL_FOLDS:
        return None
    from pipeline.training.inputs import _fold_count, _read_datalist

    count = _fold_count(_read_datalist(Path(datalist)))
    if fold == CROSS_VALIDATION:
        if count < 2:
            raise ValueError(f"--fold {CROSS_VALIDATION}: datalist {str(datalist)!r} has {count} fold(s); a "
                             "cross-validation needs at least 2 (prepare --folds 5)")
        return list(range(count))
    folds = [int(f) for f in fold]
    outside = [f for f in folds if not 0 <= f < count]
    if outside:
        raise ValueError(f"--fold {','.join(map(str, folds))}: datalist {str(datalist)!r} has folds 0 to {count - 1}")
    return folds


def _best_of(run: Path) -> tuple[float | None, int | None, int | None]:
    """(best validation mean Dice, its epoch, epochs trained) of a fold run, from its final checkpoint."""
    import torch

    from pipeline.training.checkpoints import best_metric_of

    final = run / "models" / FINAL_MODEL
    try:
        state = torch.load(str(final), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a missing or unreadable checkpoint leaves the fold without figures
        return None, None, None
    trainer = state.get("trainer") if isinstance(state, dict) else None
    epochs = None
    if isinstance(trainer, dict) and trainer.get("epoch_length"):
        epochs = int(trainer["iteration"]) // int(trainer["epoch_length"])
    best = best_metric_of(state)
    return (best[0], best[1], epochs) if best is not None else (None, None, epochs)


def fold_summary(output: Path, folds: Sequence[int]) -> dict[str, Any]:
    """The cross-validation summary of the fold runs under ``output``.

    Returns:
        ``{"folds": [{"fold", "run", "checkpoint", "epochs_trained", "best_val_mean_dice", "best_epoch"}, ...],
        "mean_val_mean_dice", "std_val_mean_dice", "validated_folds"}``; a fold that has no validation yet (its
        ``val_interval`` exceeds the epochs it trained) has ``None`` figures and is left out of the mean.
    """
    rows = []
    for fold in folds:
        run = output / f"{FOLD_PREFIX}{fold}"
        dice, epoch, epochs = _best_of(run)
        checkpoint = run_checkpoint(run)
        rows.append({"fold": fold, "run": str(run), "checkpoint": str(checkpoint) if checkpoint else None,
                     "epochs_trained": epochs, "best_val_mean_dice": dice, "best_epoch": epoch})
    values = [r["best_val_mean_dice"] for r in rows if r["best_val_mean_dice"] is not None]
    return {
        "folds": rows,
        "validated_folds": len(values),
        "mean_val_mean_dice": statistics.fmean(values) if values else None,
        "std_val_mean_dice": statistics.pstdev(values) if len(values) > 1 else (0.0 if values else None),
    }


def write_fold_summary(output: Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``summary`` (:func:`fold_summary`) as ``cross_validation.json`` and ``.csv`` in ``output``, atomically.

    Returns:
        The two paths.
    """
    import pandas as pd

    from pipeline.io import atomic_path, atomic_write_text

    json_path, csv_path = output / f"{SUMMARY_NAME}.json", output / f"{SUMMARY_NAME}.csv"
    atomic_write_text(json_path, json.dumps(summary, indent=2) + "\n")
    frame = pd.DataFrame(summary["folds"], columns=["fold", "best_val_mean_dice", "best_epoch", "epochs_trained",
                                                    "checkpoint"])
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return json_path, csv_path


def _figure(value: float | None) -> str:
    return "not validated" if value is None or math.isnan(value) else f"{value:.4f}"


def run_cross_validation(args: argparse.Namespace, folds: Sequence[int]) -> int:
    """Train ``folds`` one after another with :func:`pipeline.training.run_train`, each into ``OUTPUT/fold_<k>/``,
    then write the summary of their validation Dice (:func:`write_fold_summary`).

    Each fold is an ordinary training run: it resumes when run again, so repeating the command after an
    interruption finishes the folds still open (a finished fold resumes at its last epoch and trains no more).

    Args:
        args: the parsed ``train`` arguments; ``args.output`` is required.
        folds: the folds to train (:func:`training_folds`).

    Returns:
        0 when every fold trained; otherwise the exit status of the first fold that did not (the folds after it
        are not started, and the summary holds the folds trained so far).

    Raises:
        ValueError: no ``--output``.
        Whatever :func:`pipeline.training.run_train` raises for bad input (checked for every fold before any
        training starts).
    """
    from pipeline.training.command import run_train
    from pipeline.training.inputs import check_training_inputs

    if not args.output:
        raise ValueError("training several folds needs --output: each fold is written to OUTPUT/fold_<k>/")
    output = Path(args.output).resolve()
    for fold in folds:
        check_training_inputs(args.datalist, fold)
    print(f"train: cross-validation of {len(folds)} folds ({', '.join(map(str, folds))}) into {output}")
    status = 0
    trained = []
    for fold in folds:
        fold_args = copy.copy(args)
        fold_args.fold, fold_args.output = fold, str(output / f"{FOLD_PREFIX}{fold}")
        status = run_train(fold_args)
        if status != 0:
            break
        trained.append(fold)
    if not trained:
        return status
    summary = fold_summary(output, trained)
    json_path, _ = write_fold_summary(output, summary)
    print(f"train: cross-validation summary {json_path}")
    for row in summary["folds"]:
        print(f"  fold {row['fold']}: best validation mean Dice {_figure(row['best_val_mean_dice'])}"
              + (f" (epoch {row['best_epoch']})" if row["best_epoch"] is not None else ""))
    print(f"  mean over {summary['validated_folds']} validated fold(s): {_figure(summary['mean_val_mean_dice'])}")
    return status
