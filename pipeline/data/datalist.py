"""Folds and the datalist file: which cases are used, their channels in profile order, and their fold.

The datalist is an MSD-style JSON file that ``monai.data.load_decathlon_datalist`` reads. Paths in it
are relative to the datalist's own folder (the MSD convention), so a dataset and its datalist can be
moved together. Every later phase (train, predict, evaluate) reads the cases from this file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.profiles import DatasetProfile
from pipeline.data.records import CaseRecord
from pipeline.errors import MissingModalityError
from pipeline.io.atomic import atomic_write_json
from pipeline.io.jsonfile import read_json

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
_PATH_KEYS = ("image", "label", "reference")


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``case_2`` before ``case_10``.

    Args:
        name: any string (a case id, a file name).

    Returns:
        A list of alternating lower-cased text and integers, comparable between any two names.
    """
    return [(0, int(part)) if part.isdigit() else (1, part.lower()) for part in re.split(r"(\d+)", name)]


def strip_image_suffix(name: str) -> str | None:
    """Return ``name`` without its image extension (``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``).

    The match is case-insensitive. Returns ``None`` when ``name`` is not an image file name.
    """
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


class IncompleteCasesError(MissingModalityError):
    """One or more cases lack a channel (or, for training cases, the label).

    It is a :class:`MissingModalityError` about the first such case (``case_id``, ``modality`` and
    ``path`` refer to it); the message lists every incomplete case, and ``problems`` holds them all
    as ``{"case_id", "split", "missing", "folder"}`` dicts.
    """

    def __init__(self, problems: list[dict[str, Any]], found: list[str]):
        first = problems[0]
        super().__init__(first["case_id"], first["missing"][0], first["folder"], found)
        self.problems = problems
        if len(problems) > 1 or len(first["missing"]) > 1:
            listing = "; ".join(
                f"{p['case_id']} ({p['split']}): {', '.join(p['missing'])}" for p in problems[:20]
            )
            if len(problems) > 20:
                listing += f"; and {len(problems) - 20} more"
            self.message += f". {len(problems)} incomplete case(s) in all: {listing}"
            self.args = (f"{self.args[0]}. {len(problems)} incomplete case(s) in all: {listing}",)


def assign_folds(records: list[CaseRecord], n_folds: int = 5, seed: int = 0) -> dict[str, int]:
    """Assign the training records to cross-validation folds, keeping each patient in one fold.

    Records are grouped by ``record.group`` (the patient when known, so slabs A and B of one patient
    share a fold). The groups are shuffled with ``numpy.random.default_rng(seed)``, then placed
    largest first, each on the fold that currently holds the fewest cases. The result depends only
    on the set of records and the seed, not on their order.

    Args:
        records: case records; those whose split is not ``training`` are ignored.
        n_folds: number of folds (1 puts every case in fold 0).
        seed: shuffling seed.

    Returns:
        ``case_id -> fold`` for every training record (empty when there is none).

    Raises:
        ValueError: ``n_folds`` < 1, more folds than patient groups, or a training case id repeats.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be at least 1, got {n_folds}")
    training = [r for r in records if r.split == "training"]
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    for record in training:
        if record.case_id in seen:
            raise ValueError(f"training case id {record.case_id!r} occurs twice; case ids must be unique")
        seen.add(record.case_id)
        groups.setdefault(record.group, []).append(record.case_id)
    if not groups:
        return {}
    if n_folds > len(groups):
        raise ValueError(
            f"cannot split {len(training)} training case(s) from {len(groups)} patient(s) into {n_folds} folds: "
            f"each fold needs at least one patient; use --folds {len(groups)} or fewer"
        )
    names = sorted(groups, key=natural_key)
    order = np.random.default_rng(seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    # Stable sort: groups of equal size keep their shuffled order.
    shuffled.sort(key=lambda g: -len(groups[g]))
    sizes = [0] * n_folds
    folds: dict[str, int] = {}
    for group in shuffled:
        fold = min(range(n_folds), key=lambda k: (sizes[k], k))
        sizes[fold] += len(groups[group])
        for case_id in groups[group]:
            folds[case_id] = fold
    return folds


def select_channels(
    records: list[CaseRecord], profile: DatasetProfile, skip_incomplete: bool = False
) -> tuple[list[CaseRecord], list[dict[str, Any]]]:
    """Check that every case has every channel of the profile (and training cases a label).

    Args:
        records: case records from a layout reader.
        profile: gives the channels (and the label's name, ``profile.label_modality``, for messages).
        skip_incomplete: leave incomplete cases out instead of raising.

    Returns:
        ``(complete records, skipped)`` where ``skipped`` lists ``{"case_id", "split", "missing"}``
        for each case left out (always empty when ``skip_incomplete`` is False).

    Raises:
        IncompleteCasesError: (a :class:`MissingModalityError`) some case is incomplete and
            ``skip_incomplete`` is False; it names the first case and modality and lists all of them.
    """
    label_name = profile.label_modality or "label"
    kept: list[CaseRecord] = []
    problems: list[dict[str, Any]] = []
    for record in records:
        missing = [ch for ch in profile.channels if ch not in record.modalities]
        if record.split == "training" and record.label is None:
            missing.append(label_name)
        if not missing:
            kept.append(record)
            continue
        # A reader that knows which file it expected (nnU-Net, MSD) names it; else the case folder.
        expected = record.extra.get("missing_files", {}) if isinstance(record.extra, dict) else {}
        first = missing[0]
        folder = expected.get("label" if first == label_name else first) or record.folder
        problems.append({"case_id": record.case_id, "split": record.split, "missing": missing, "folder": folder})
    if problems and not skip_incomplete:
        first_case = next(r for r in records if r.case_id == problems[0]["case_id"] and r.split == problems[0]["split"])
        found = list(first_case.modalities) + ([label_name] if first_case.label else [])
        raise IncompleteCasesError(problems, found)
    skipped = [{"case_id": p["case_id"], "split": p["split"], "missing": p["missing"]} for p in problems]
    return kept, skipped


def _relative(path: str, base: Path) -> str:
    return os.path.relpath(os.path.abspath(path), base)


def _entry(record: CaseRecord, profile: DatasetProfile, base: Path, fold: int | None) -> dict[str, Any]:
    image = [record.modalities[ch] for ch in profile.channels]
    ref_name = profile.reference_modality
    reference = record.modalities[ref_name] if ref_name in record.modalities else image[0]
    entry: dict[str, Any] = {"image": [_relative(p, base) for p in image]}
    if record.label is not None:
        entry["label"] = _relative(record.label, base)
    entry["case_id"] = record.case_id
    entry["split"] = record.split
    if fold is not None:
        entry["fold"] = fold
    entry["modalities"] = {name: _relative(p, base) for name, p in record.modalities.items()}
    entry["reference"] = _relative(reference, base)
    for key in ("patient_id", "slab_id", "smir_id"):
        value = getattr(record, key)
        if value is not None:
            entry[key] = value
    extra = {k: v for k, v in (record.extra or {}).items() if k != "missing_files"}
    if extra:
        entry["extra"] = extra
    return entry


def build_datalist(
    records: list[CaseRecord],
    profile: DatasetProfile,
    layout: str,
    root: str | Path,
    out_path: str | Path,
    n_folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Build the MSD-style datalist for complete case records.

    Each ``training`` entry has ``image`` (one path per profile channel, in the profile's order),
    ``label``, ``case_id``, ``split``, ``fold``, ``modalities`` (every modality found), ``reference``
    (the reference modality's file, or the first channel's when the case lacks it), and
    ``patient_id``/``slab_id``/``smir_id`` where known, plus ``extra`` (layout-specific fields).
    ``testing`` entries are the same without ``fold`` (and with ``label`` only when one exists).
    Paths are relative to ``out_path``'s folder.

    Args:
        records: case records; call :func:`select_channels` first to leave incomplete ones out.
        profile: channels, reference modality and label classes.
        layout: the layout the records were read as (recorded in the file).
        root: the dataset root (recorded, relative to the datalist's folder).
        out_path: where the datalist will be written; paths are made relative to its folder.
        n_folds: number of folds; seed: fold shuffling seed (see :func:`assign_folds`).

    Returns:
        The datalist dict (write it with :func:`write_datalist`).

    Raises:
        IncompleteCasesError: a record lacks a channel, or a training record its label.
        ValueError: the folds cannot be made (see :func:`assign_folds`), or a case id repeats within a split.
    """
    select_channels(records, profile)
    for split in ("training", "testing"):
        ids = [r.case_id for r in records if r.split == split]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"{split} case id(s) occur more than once: {', '.join(duplicates)}")
    base = Path(os.path.abspath(out_path)).parent
    root_abs = Path(os.path.abspath(root))
    folds = assign_folds(records, n_folds=n_folds, seed=seed)
    training = [r for r in records if r.split == "training"]
    testing = [r for r in records if r.split == "testing"]
    return {
        "name": (root_abs.parent if root_abs.is_file() else root_abs).name,
        "description": f"{layout} dataset read with profile {profile.name}",
        "layout": layout,
        "profile": profile.name,
        "root": _relative(str(root), base),
        "channels": list(profile.channels),
        "modality": {str(i): ch for i, ch in enumerate(profile.channels)},
        "labels": {str(v): k for k, v in profile.label_classes.items()},
        "reference_modality": profile.reference_modality,
        "numTraining": len(training),
        "numTest": len(testing),
        "folds": n_folds,
        "seed": seed,
        "training": [_entry(r, profile, base, folds[r.case_id]) for r in training],
        "testing": [_entry(r, profile, base, None) for r in testing],
    }


def write_datalist(datalist: dict[str, Any], out_path: str | Path) -> Path:
    """Write ``datalist`` to ``out_path`` as JSON, atomically. Returns ``out_path``."""
    return atomic_write_json(out_path, datalist)


def _absolute(value: Any, base: Path) -> Any:
    if isinstance(value, str):
        return os.path.normpath(os.path.join(base, value))
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _absolute(v, base) for k, v in value.items()}
    return value


def read_datalist_json(path: str | Path) -> dict[str, Any]:
    """Read a datalist file as a JSON object (the one reader of datalist files: every phase names the same faults).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read, is not valid JSON, or is not a JSON object; the message names it.
    """
    return read_json(
        path,
        f"datalist {str(path)!r}",
        missing="{what} not found: run `python -m pipeline prepare` first",
        invalid="{what} is not valid JSON ({reason}): write it again with `python -m pipeline prepare`",
        not_object="{what} is not a JSON object with 'training'/'testing' lists: is it a datalist written by "
                   "`python -m pipeline prepare`?",
    )


def datalist_channels(path: str | Path, default: list[str]) -> list[str]:
    """The channel order a datalist names (its ``channels`` list, written by ``prepare``), so that a bundle run
    stacks the channels the datalist was prepared with; ``default`` when the file is absent or names none (an MSD
    datalist, a bundle checked without data by the model zoo's tools).

    Args:
        path: the datalist JSON file.
        default: the channels to use when the datalist names none (the bundle's or the profile's).

    Returns:
        The channel names, in stacking order.

    Raises:
        ValueError: the file exists but is not a datalist (:func:`read_datalist_json`), or its ``channels`` is not
            a non-empty list of distinct names; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        return list(default)
    named = read_datalist_json(path).get("channels")
    if named is None:
        return list(default)
    if (not isinstance(named, list) or not named or not all(isinstance(c, str) and c for c in named)
            or len(set(named)) != len(named)):
        raise ValueError(f"datalist {str(path)!r}: 'channels' must be a list of distinct modality names, got "
                         f"{named!r}; write it again with `python -m pipeline prepare`")
    return list(named)


ALL_FOLDS = "all"
# ``train --fold cv``: every fold of the datalist, one run after another (a cross-validation)
CROSS_VALIDATION = "cv"


def load_datalist(
    path: str | Path,
    split: str = "training",
    fold: int | str | None = None,
    exclude_fold: int | str | None = None,
) -> list[dict[str, Any]]:
    """Read the records of one split of a datalist, with every path made absolute.

    Args:
        path: the datalist JSON file.
        split: ``training`` or ``testing`` (``test`` is accepted for MSD files).
        fold: keep only the training records of this fold (the validation set of fold ``fold``);
            ``None`` or ``"all"`` keeps all.
        exclude_fold: keep only the training records of the other folds (the training set of
            that fold); ``None`` or ``"all"`` keeps all. ``"all"`` is nnU-Net's "fold all": a bundle
            config passes its ``fold`` id as both arguments, so ``fold="all"`` trains on every
            training record (and validates on the same records, which then measures the fit only).

    Returns:
        The records (dicts) with ``image``, ``label``, ``reference`` and ``modalities`` paths absolute.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a datalist, lacks the split, or the fold does not exist.
    """
    path = Path(path)
    data = read_datalist_json(path)
    key = split
    if key not in data and split == "testing" and "test" in data:
        key = "test"
    if key not in data:
        lists = [k for k, v in data.items() if isinstance(v, list)]
        raise ValueError(f"datalist {str(path)!r} has no {split!r} list (it has: {', '.join(lists) or 'none'})")
    fold = None if fold == ALL_FOLDS else fold
    exclude_fold = None if exclude_fold == ALL_FOLDS else exclude_fold
    for chosen in (fold, exclude_fold):
        if chosen is None:
            continue
        if isinstance(chosen, bool) or not isinstance(chosen, int):
            raise ValueError(f"a fold is a whole number or {ALL_FOLDS!r}; got {chosen!r}")
        if split != "training":
            raise ValueError(f"only training records have folds; got split {split!r} with fold {chosen}")
        n_folds = data.get("folds")
        if chosen < 0 or (isinstance(n_folds, int) and chosen >= n_folds):
            raise ValueError(f"datalist {str(path)!r} has folds 0..{(n_folds or 1) - 1}; got fold {chosen}")
    base = path.resolve().parent
    records = []
    for item in data[key]:
        entry = {"image": item} if isinstance(item, (str, list)) else dict(item)
        if fold is not None and entry.get("fold") != fold:
            continue
        if exclude_fold is not None and entry.get("fold") == exclude_fold:
            continue
        for k in _PATH_KEYS + ("modalities",):
            if k in entry and entry[k] is not None:
                entry[k] = _absolute(entry[k], base)
        records.append(entry)
    return records
