"""The checkpoints a ``predict`` run uses: ``--checkpoint`` files or run folders, ``--model`` a training run or a
folder of fold runs (ensembled, as nnU-Net predicts with the folds of a cross-validation)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import CaseError

__all__ = ["BEST_MODEL", "FINAL_MODEL", "FOLD_PREFIX", "fold_runs", "resolve_checkpoints", "run_checkpoint"]

# the checkpoints of a training run, in the order predict prefers them: the best by validation, then the last
BEST_MODEL = "model.pt"
FINAL_MODEL = "last.pt"
# ``train --fold cv --output RUN`` writes one run per fold: RUN/fold_0, RUN/fold_1, ...
FOLD_PREFIX = "fold_"
_FOLD_FOLDER = re.compile(re.escape(FOLD_PREFIX) + r"(\d+)")


def fold_runs(folder: Path) -> list[Path]:
    """The fold runs of a cross-validation folder (``fold_<k>`` sub-folders with a ``models/`` folder), by fold."""
    found = []
    for child in folder.iterdir() if folder.is_dir() else []:
        match = _FOLD_FOLDER.fullmatch(child.name)
        if match and child.is_dir() and (child / "models").is_dir():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def run_checkpoint(run: Path) -> Path | None:
    """The checkpoint of a training run folder (``RUN/models/``, or a ``models/`` folder itself): the best model
    (``model.pt``) when validation wrote one, else the final checkpoint (``last.pt``); ``None`` if neither."""
    models = run if (run / BEST_MODEL).is_file() or (run / FINAL_MODEL).is_file() else run / "models"
    for name in (BEST_MODEL, FINAL_MODEL):
        if (models / name).is_file():
            return models / name
    return None


def _checkpoints_of(spec: Path) -> list[Path]:
    if spec.is_file():
        return [spec]
    if not spec.is_dir():
        raise FileNotFoundError(f"checkpoint {str(spec)!r} not found: give a checkpoint file, a train --output "
                                "folder or a folder of fold runs")
    single = run_checkpoint(spec)
    if single is not None:
        return [single]
    folds = fold_runs(spec)
    if not folds:
        raise CaseError(None, str(spec), f"holds no checkpoint: expected models/{BEST_MODEL} or models/{FINAL_MODEL} "
                        f"(a train --output folder) or {FOLD_PREFIX}<k>/models/ folders (train --fold cv)")
    checkpoints = []
    for fold in folds:
        checkpoint = run_checkpoint(fold)
        if checkpoint is None:
            raise CaseError(None, str(fold), f"a fold run without a checkpoint (models/{BEST_MODEL} or "
                            f"models/{FINAL_MODEL}): train that fold first, or predict with the others by naming them "
                            "in --checkpoint")
        checkpoints.append(checkpoint)
    return checkpoints


def resolve_checkpoints(specs: Sequence[str | Path], default: Path) -> list[Path]:
    """The checkpoint files a ``predict`` run averages, from what ``--checkpoint``/``--model`` name.

    Args:
        specs: checkpoint files, training run folders (``train --output``: its best model, else its final
            checkpoint) or cross-validation folders (``train --fold cv --output``: one checkpoint per fold);
            empty for the bundle's default.
        default: the checkpoint to use when ``specs`` is empty (the bundle's ``models/model.pt``).

    Returns:
        Absolute paths, in order, without repeats; more than one means an ensemble.

    Raises:
        FileNotFoundError: a named file or folder does not exist, or the default checkpoint is missing.
        CaseError: a folder holds no checkpoint, or a fold run has none.
    """
    if not specs:
        if not default.is_file():
            raise FileNotFoundError(f"checkpoint {str(default)!r} not found: train the bundle first or give "
                                    "--checkpoint or --model")
        return [default.resolve()]
    checkpoints: list[Path] = []
    for spec in specs:
        for checkpoint in _checkpoints_of(Path(spec).expanduser().resolve()):
            if checkpoint not in checkpoints:
                checkpoints.append(checkpoint)
    return checkpoints
