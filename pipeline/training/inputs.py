"""Before a training run: everything that can be checked without training (the datalist, the fold, every training
case's files, the dataset profile, and that the checkpoints to resume are of the same network)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.bundles import parse_overrides, profile_path
from pipeline.data.datalist import ALL_FOLDS
from pipeline.planning.bundle_settings import ARCHITECTURE_KEYS, NETWORK_OVERRIDES, PLAN_SOURCES, TRAINED_PLANS


def _read_datalist(path: Path) -> dict[str, Any]:
    from pipeline.data.datalist import read_datalist_json

    data = read_datalist_json(path)
    if not isinstance(data.get("training"), list):
        raise ValueError(f"datalist {str(path)!r} has no 'training' list of case records: is it a datalist written "
                         "by `python -m pipeline prepare`?")
    return data


def _fold_count(data: Mapping[str, Any]) -> int:
    folds = data.get("folds")
    if isinstance(folds, int) and not isinstance(folds, bool) and folds > 0:
        return folds
    found = [r.get("fold") for r in data["training"] if isinstance(r, Mapping)]
    numbers = [f for f in found if isinstance(f, int) and not isinstance(f, bool)]
    return max(numbers) + 1 if numbers else 0


def check_training_inputs(datalist: str | Path, fold: int | str) -> dict[str, Any]:
    """Check what a training run needs before the bundle starts, so that bad input fails at once with one
    message instead of a traceback minutes later.

    Checked: the datalist is readable JSON with a ``training`` list; ``fold`` is one of its folds (or
    ``"all"``); every training record is usable (:func:`pipeline.data.validation.check_records`: a unique plain
    ``case_id``, one file per channel, a label, channels that agree with the record's modality map) and its
    image and label files exist and are not empty; the fold leaves both a training and a validation set; the
    dataset profile the datalist names exists.

    Args:
        datalist: the datalist JSON written by ``prepare``.
        fold: the validation fold (an int) or ``"all"``.

    Returns:
        The datalist, as read.

    Raises:
        FileNotFoundError: no such datalist, or its dataset profile is missing.
        ValueError: a malformed datalist, a fold out of range (the message gives the valid range), an empty
            training or validation set. The message names the datalist.
        pipeline.errors.CaseError: a bad training record or a missing or empty file, naming the case and the file.
    """
    from pipeline.data.datalist import load_datalist
    from pipeline.data.validation import check_records
    from pipeline.errors import CaseError

    path = Path(datalist).resolve()
    data = _read_datalist(path)
    if fold != ALL_FOLDS:
        n_folds = _fold_count(data)
        if n_folds == 0:
            raise ValueError(f"datalist {str(path)!r} assigns no folds to its training records: prepare it with "
                             "--folds N, or train on every training case with --fold all")
        if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < n_folds:
            raise ValueError(f"--fold {fold} is out of range: datalist {str(path)!r} has {n_folds} fold(s), "
                             f"0..{n_folds - 1}; choose one of them, or --fold all to train on every training case")
    records = load_datalist(path, "training")
    channels = [str(c) for c in data.get("channels") or []] or None
    check_records(records, path, "training", channels, require_files=True, require_label=True)
    for record in records:
        image = record["image"]
        for file in [*([image] if isinstance(image, str) else image), record["label"]]:
            if os.path.isfile(file) and os.path.getsize(file) == 0:
                raise CaseError(record.get("case_id"), str(file), "the file is empty (0 bytes); copy it again or "
                                "leave the case out (prepare --skip-incomplete)")
    if fold != ALL_FOLDS:
        validation = [r for r in records if r.get("fold") == fold]
        training = [r for r in records if r.get("fold") != fold]
        if not training:
            raise ValueError(f"fold {fold} of datalist {str(path)!r} leaves no case to train on: all "
                             f"{len(records)} training case(s) are in fold {fold}; prepare more cases or more folds, "
                             "or train with --fold all")
        if not validation:
            raise ValueError(f"fold {fold} of datalist {str(path)!r} has no validation case: no training record is "
                             f"in fold {fold}; choose another --fold, or prepare the datalist again")
    elif not records:
        raise ValueError(f"datalist {str(path)!r} has no training case")
    profile = profile_path(data)
    if not profile.is_file():
        raise FileNotFoundError(f"dataset profile {str(profile)!r} named by datalist {str(path)!r} not found")
    return data

def _check_resumable_with(plans: Mapping[str, Any] | None, models: Path, args) -> None:
    """Refuse a run whose plans contradict those of the checkpoints it would resume from."""
    from pipeline.training.checkpoints import training_checkpoints

    resume = dict(parse_overrides(args.set)).get("resume", "True").strip().lower() not in ("false", "0", "no")
    existing = models / TRAINED_PLANS
    if not resume or not training_checkpoints(models) or not existing.is_file():
        return
    from pipeline.planning.plans import load_plans

    try:
        old = load_plans(existing)
    except (OSError, ValueError):
        return
    if plans is None:
        raise ValueError(f"{models} holds checkpoints trained with plans ({existing}); resuming them needs the same "
                         "--plans, or train into another --output")
    keys = [PLAN_SOURCES.get(k, k) for k in ARCHITECTURE_KEYS] + [NETWORK_OVERRIDES]
    differ = [k for k in keys if old.get(k) != plans.get(k)]
    if differ:
        raise ValueError(f"{models} holds checkpoints of another network: its {existing.name} differs in "
                         f"{', '.join(differ)} from this run's plans, so they cannot be resumed; train into another "
                         "--output, or pass the plans they were trained with")

