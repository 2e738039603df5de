"""Score a folder of predicted masks against the ground truth: per-case metrics, summary, clinical table.

Predictions are paired with truth cases by file name:

- ``<case_id>.nii.gz`` (or ``.nii``, ``.mha``, ``.nrrd``): the case id;
- ``SMIR.<name>.<ID>.nii``: the ISLES 2018 submission name, ID being the SMIR id of the case's CT_MTT
  folder (the datalist's ``smir_id``, or ``mtt_id`` in the synthetic ``TESTING_GROUND_TRUTH/cases.csv``);
- ``<sub>_ses-XXXX_msk.nii.gz`` (ISLES 2022): the subject, or ``<sub>_<ses>`` for multi-session subjects.

The truth is a datalist JSON (labelled records of both splits), a flat folder of ``<case_id>`` masks,
a dataset root in a known layout (its labelled cases, plus ``TESTING_GROUND_TRUTH/`` when present),
or the synthetic ``TESTING_GROUND_TRUTH`` folder itself. A prediction without truth and a truth without
prediction are listed (rows with status ``no_truth`` / ``no_prediction``) and warned about; a case that
cannot be scored (another grid, unreadable file, a mask whose values are not {0, 1}) is a failure naming
its files, and the others go on.

Which files are predictions: image files (``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``) under ``--pred``;
``manifest.csv``, ``failures.csv``, ``*_probabilities.npz`` and hidden files (``.``-names, the partial
files of atomic writes) never are. When the folder holds ``predict``'s ``manifest.csv``, only the files it
lists as ``written`` are scored: any other prediction file (a stale result of an older run, a file copied
in) is refused by name (status ``refused``), a case the manifest lists as ``failed`` is a failed case,
and a listed file that is missing is an error. Without a manifest every prediction file is scored, with a
warning that nothing tells which run wrote them.

Splits: a datalist or dataset root holds training and test cases that may share a case id
(ISLES 2018's ``case_1``...). A prediction is paired with the record of the split its name matches; when
its name matches a record of each split, the split of the run decides (the one split that the other
predictions, and the manifest's cases, match on their own); when that is not known the prediction is
refused, naming both records, so that a test prediction is never scored against a training label.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from pipeline.baseline import threshold_rule
from pipeline.checks import binary_label, parse_label_values
from pipeline.data.datalist import load_datalist, natural_key, strip_image_suffix
from pipeline.data.layouts import detect_layout, discover_cases
from pipeline.errors import CaseError, LayoutError
from pipeline.io import Geometry, atomic_path, atomic_write_json, read_array, read_geometry
from pipeline.manifest import (
    FAILED, FAILURES_NAME, MANIFEST_NAME, PROBABILITIES_SUFFIX, RUN_FILES, WRITTEN, ManifestEntry, read_manifest,
)
from pipeline.metrics import METRIC_NAMES, case_metrics, volume_ml
from pipeline.transforms import grid_difference

METHODS = ("model", "threshold")
BASELINES = ("threshold",)
# Columns of the per-case CSV, in order.
ROW_COLUMNS = ("case_id", "method", "status", "prediction", "truth", *METRIC_NAMES, "error")
CLINICAL_COLUMNS = (
    "case_id", "prediction", "core_ml", "hypoperfusion_ml", "mismatch_ml", "mismatch_ratio",
    "truth_core_ml", "threshold_core_ml", "tmax",
)
GROUND_TRUTH_CSV = "cases.csv"
GROUND_TRUTH_FOLDER = "TESTING_GROUND_TRUTH"
_SMIR_RE = re.compile(r"^SMIR\..*\.(\d+)$", re.IGNORECASE)
_ISLES22_RE = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_(ses-[A-Za-z0-9]+))?(?:_[A-Za-z0-9-]+)*$")
_MASK_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
PREDICTION_PATTERNS = (
    "<case_id>.nii.gz (or .nii, .mha, .nrrd)",
    "SMIR.<name>.<ID>.nii (ID: the SMIR id of the case's CT_MTT folder)",
    "<sub>_ses-XXXX_msk.nii.gz",
)


# ---------------------------------------------------------------------------------------------
# Cases and their files
# ---------------------------------------------------------------------------------------------
@dataclass
class EvaluationCase:
    """One case that predictions can be paired with.

    Attributes:
        case_id: the case id (unique among the truth cases, see ``key``).
        label: the ground-truth mask file, ``None`` when the case has none.
        split: ``training``/``testing`` when known.
        smir_id: ISLES 2018: the SMIR id of the case's CT_MTT folder (submissions are named by it).
        modalities: modality name -> image file (CBF, Tmax, ...), empty when unknown.
        key: the name the case goes by in the tables: ``case_id``, or ``<split>/<case_id>`` when two
            truth cases share a case id (ISLES 2018 training and test cases are both ``case_1``...).
        label_values: the dataset profile's mapping of label file values to 0/1 (``{255: 1}``), when the
            truth comes with a profile that declares one; the label must hold {0, 1} after it.
    """

    case_id: str
    label: str | None = None
    split: str | None = None
    smir_id: str | None = None
    modalities: dict[str, str] = field(default_factory=dict)
    key: str = ""
    label_values: dict | None = None

    def __post_init__(self):
        if not self.key:
            self.key = self.case_id

    def modality(self, name: str) -> str | None:
        """The file of modality ``name`` (case-insensitive), or ``None``."""
        for key, path in self.modalities.items():
            if key.lower() == name.lower():
                return path
        return None


def read_volume(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read an image file (NIfTI with nibabel, MHA/NRRD with SimpleITK) as an (x, y, z) array.

    Trailing axes of length 1 beyond the third are dropped (a mask saved as 256x256xNx1).

    Args:
        path: the image file.

    Returns:
        ``(array, geometry)``; the geometry is :func:`pipeline.io.read_geometry`'s, whose spacing
        follows the header's ``pixdim`` when the affine disagrees with it.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read as an image.
    """
    path = Path(path)
    geometry = read_geometry(path)
    try:
        data = read_array(path)
    except (OSError, RuntimeError, EOFError, zlib.error, nib.filebasedimages.ImageFileError) as err:
        raise ValueError(f"{path}: cannot read the image ({err})") from err
    except (ValueError, TypeError) as err:  # truncated uncompressed data, an unsupported data type
        raise ValueError(f"{path}: cannot read the image ({err})") from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return np.asarray(data), geometry


def is_prediction_name(name: str) -> bool:
    """Whether a file name can be a prediction: an image suffix, not hidden, not ``manifest.csv``,
    ``failures.csv`` or a ``*_probabilities.npz`` map."""
    lower = name.lower()
    return (
        not name.startswith(".") and name not in RUN_FILES and not lower.endswith(PROBABILITIES_SUFFIX)
        and lower.endswith(_MASK_SUFFIXES)
    )


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    paths = folder.rglob("*") if recursive else folder.iterdir()
    found = [
        p for p in paths
        if p.is_file() and is_prediction_name(p.name)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found, key=lambda p: natural_key(str(p.relative_to(folder))))


def find_predictions(pred_dir: str | Path) -> list[Path]:
    """List the prediction files under ``pred_dir`` (recursively; ``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``).

    Hidden files and folders, ``manifest.csv``, ``failures.csv`` and ``*_probabilities.npz`` are skipped;
    the manifest is not consulted (see :func:`select_predictions`).

    Raises:
        FileNotFoundError: ``pred_dir`` is not a folder.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder {str(pred_dir)!r} not found")
    return _image_files(pred_dir, recursive=True)


def _profile_label_values(profile: Any, where: str) -> dict | None:
    """A profile's ``label_values`` (read with ``getattr``/``.get``: absent means no mapping), validated."""
    values = profile.get("label_values") if isinstance(profile, dict) else getattr(profile, "label_values", None)
    if not values:
        return None
    if not isinstance(values, dict):
        raise ValueError(
            f"{where}: label_values must map label file values to 0 or 1 (e.g. {{255: 1}}); got {values!r}"
        )
    try:
        parse_label_values(values)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    return dict(values)


def datalist_label_values(path: str | Path) -> dict | None:
    """The ``label_values`` of the dataset profile a datalist names (``profile``; ``isles2018`` when it names
    none), or ``None`` when the profile declares none or cannot be found (with a warning when the datalist
    named it).

    Raises:
        FileNotFoundError: no such datalist.
        ValueError: the datalist is not a readable JSON object, or the profile or its ``label_values`` is malformed.
    """
    from pipeline.bundles import profile_path
    from pipeline.data.datalist import read_datalist_json
    from pipeline.data.profiles import load_profile

    path = Path(path)
    data = read_datalist_json(path)
    profile = profile_path(data)
    if not profile.is_absolute() and not profile.is_file() and (path.parent / profile).is_file():
        profile = path.parent / profile
    if not profile.is_file():
        if data.get("profile"):
            warnings.warn(
                f"datalist {str(path)!r} names profile {data['profile']!r}, which is not found ({profile}); "
                "its labels are read without a value mapping (they must hold 0 and 1)",
                UserWarning, stacklevel=3,
            )
        return None
    import yaml

    try:
        loaded = load_profile(profile)
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"profile {str(profile)!r} (of datalist {str(path)!r}) is not readable YAML: {err}") from err
    return _profile_label_values(loaded, f"profile {profile} (of datalist {path})")


def _datalist_cases(path: Path, labels: bool = True) -> list[EvaluationCase]:
    """The records of both splits; ``labels``: with the profile's ``label_values`` (a truth datalist)."""
    label_values = datalist_label_values(path) if labels else None
    cases = []
    for split in ("training", "testing"):
        try:
            records = load_datalist(path, split)
        except ValueError as err:
            if f"has no {split!r} list" in str(err):
                continue
            raise
        for record in records:
            label = record.get("label")
            case_id = record.get("case_id")
            if not case_id:
                source = label or (record["image"][0] if isinstance(record.get("image"), list) else record.get("image"))
                case_id = strip_image_suffix(Path(str(source)).name) or Path(str(source)).name
            cases.append(
                EvaluationCase(
                    case_id=str(case_id),
                    label=label if isinstance(label, str) else None,
                    split=record.get("split", split),
                    smir_id=None if record.get("smir_id") is None else str(record["smir_id"]),
                    modalities=dict(record.get("modalities") or {}),
                    label_values=label_values,
                )
            )
    return cases


def _ground_truth_cases(folder: Path) -> list[EvaluationCase]:
    table = folder / GROUND_TRUTH_CSV
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "case_id" not in rows[0]:
        raise LayoutError(f"{table}: expected a case_id column (with ot_id and mtt_id), found {', '.join(rows[0])}")
    cases = []
    for row in rows:
        case_id = row["case_id"].strip()
        case_dir = folder / case_id
        ot_id = (row.get("ot_id") or "").strip()
        pattern = f"SMIR.*.OT.{ot_id}" if ot_id else "SMIR.*.OT.*"
        ot_folders = sorted(p for p in case_dir.glob(pattern) if p.is_dir()) if case_dir.is_dir() else []
        images = _image_files(ot_folders[0], recursive=False) if len(ot_folders) == 1 else []
        if len(images) != 1:
            raise CaseError(
                case_id, str(case_dir),
                f"{table} lists this case but its folder does not hold one {pattern}/ folder with one mask "
                f"({len(ot_folders)} folder(s), {len(images)} image(s))",
            )
        mtt_id = (row.get("mtt_id") or "").strip()
        cases.append(EvaluationCase(case_id, str(images[0].resolve()), "testing", mtt_id or None))
    return cases


def _layout_cases(root: Path) -> list[EvaluationCase]:
    _, profile, records = discover_cases(root)
    where = f"profile {getattr(profile, 'path', None) or getattr(profile, 'name', '')}"
    label_values = _profile_label_values(profile, where)
    cases = [
        EvaluationCase(r.case_id, r.label, r.split, r.smir_id, dict(r.modalities), label_values=label_values)
        for r in records
    ]
    ground_truth = root / GROUND_TRUTH_FOLDER
    if (ground_truth / GROUND_TRUTH_CSV).is_file():
        tested = {(c.case_id, c.smir_id): c for c in cases if c.split == "testing"}
        for truth in _ground_truth_cases(ground_truth):
            record = tested.get((truth.case_id, truth.smir_id))
            if record is not None:
                record.label = truth.label
            else:
                cases.append(truth)
    return cases


def load_cases(source: str | Path) -> tuple[str, list[EvaluationCase]]:
    """Read the cases (labelled or not) of a datalist JSON, a dataset folder or a folder of masks.

    Args:
        source: a datalist JSON (both splits are read with :func:`load_datalist`); a folder with the
            synthetic ``cases.csv`` (``TESTING_GROUND_TRUTH``); a flat folder of ``<case_id>`` mask
            files; or a dataset root in a layout that :func:`pipeline.data.layouts.discover_cases`
            knows (with its ``TESTING_GROUND_TRUTH/`` test labels when present).

    Returns:
        ``(kind, cases)``, kind being ``datalist``, ``ground-truth folder``, ``mask folder`` or
        ``<layout> dataset``. Every case is returned, with ``label=None`` where it has none.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        LayoutError: a folder of none of those kinds.
        CaseError, ValueError: a malformed datalist, case or ``cases.csv``.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"truth {str(source)!r} not found")
    if source.is_file():
        if source.suffix.lower() != ".json":
            raise LayoutError(f"truth {str(source)!r}: expected a datalist JSON file or a folder")
        return "datalist", _datalist_cases(source)
    if (source / GROUND_TRUTH_CSV).is_file():
        return "ground-truth folder", _ground_truth_cases(source)
    masks = _image_files(source, recursive=False)
    if masks:
        cases = []
        for mask in masks:
            case_id = strip_image_suffix(mask.name) or mask.name
            cases.append(EvaluationCase(case_id, str(mask.resolve())))
        return "mask folder", cases
    try:
        layout = detect_layout(source)
    except LayoutError as err:
        raise LayoutError(
            f"truth {str(source)!r} is neither a datalist, a folder of <case_id> masks, a folder with "
            f"{GROUND_TRUTH_CSV}, nor a dataset root: {err}"
        ) from err
    return f"{layout} dataset", _layout_cases(source)


def _assign_keys(cases: list[EvaluationCase], strict: bool = True) -> None:
    """Give each case its table name: the case id, or ``<split>/<case_id>`` when the id repeats."""
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.case_id] = counts.get(case.case_id, 0) + 1
    seen: dict[str, EvaluationCase] = {}
    for case in cases:
        case.key = case.case_id if counts[case.case_id] == 1 else f"{case.split or 'unknown'}/{case.case_id}"
        if strict and case.key in seen:
            raise CaseError(
                case.case_id, case.label,
                f"two truth cases share this case id and split: {seen[case.key].label} and {case.label}",
            )
        seen[case.key] = case


def _find_image_case(case: EvaluationCase, images: list[EvaluationCase]) -> EvaluationCase | None:
    if case.smir_id is not None:
        found = [c for c in images if c.smir_id == case.smir_id]
        if len(found) == 1:
            return found[0]
    found = [c for c in images if c.case_id == case.case_id and (case.split is None or c.split in (None, case.split))]
    return found[0] if len(found) == 1 else None


def load_truth_records(truth: str | Path, images: str | Path | None = None) -> tuple[str, list[EvaluationCase]]:
    """Every case of ``truth``, labelled or not, the labelled ones with their modality files from ``images``
    where they lack them and unique ``key`` values.

    The unlabelled records are kept so that a prediction can be told apart by split: a test prediction
    whose id names an unlabelled test record and a labelled training record is not the training case's.

    Args:
        truth: see :func:`load_cases`.
        images: a datalist JSON whose records give the cases' modality files (CBF, Tmax...), matched
            by SMIR id, else by case id (and split when both are known).

    Returns:
        ``(kind, records)``.

    Raises:
        FileNotFoundError, LayoutError, CaseError, ValueError: as :func:`load_cases`, or two labelled
            cases share a case id and a split.
    """
    kind, records = load_cases(truth)
    cases = [c for c in records if c.label]
    if images is not None:
        image_cases = _datalist_cases(Path(images), labels=False) if Path(images).is_file() else load_cases(images)[1]
        unknown = []
        for case in cases:
            if not case.modalities:
                found = _find_image_case(case, image_cases)
                if found is not None:
                    case.modalities = dict(found.modalities)
                    case.smir_id = case.smir_id or found.smir_id
                else:
                    unknown.append(case.case_id)
        if unknown:
            warnings.warn(
                f"{images}: no single record for truth case(s) {', '.join(unknown[:20])}"
                f"{', ...' if len(unknown) > 20 else ''} (matched by SMIR id, else by case id and split); "
                "their maps are unknown",
                UserWarning, stacklevel=2,
            )
    _assign_keys(cases)
    return kind, records


def load_truth_cases(truth: str | Path, images: str | Path | None = None) -> tuple[str, list[EvaluationCase]]:
    """The labelled cases of ``truth``, with their modality files from ``images`` where they lack them.

    Args:
        truth: see :func:`load_cases`; cases without a label are left out.
        images: see :func:`load_truth_records`.

    Returns:
        ``(kind, cases)``, with unique ``key`` values.

    Raises:
        FileNotFoundError, LayoutError, CaseError, ValueError: as :func:`load_cases`, or two labelled
            cases share a case id and a split.
    """
    kind, records = load_truth_records(truth, images)
    return kind, [c for c in records if c.label]


# ---------------------------------------------------------------------------------------------
# Pairing predictions with cases
# ---------------------------------------------------------------------------------------------
def prediction_names(path: str | Path) -> list[tuple[str, str]]:
    """The ways a prediction file may name its case, most specific first.

    Args:
        path: a prediction file.

    Returns:
        ``(kind, value)`` pairs: ``("case_id", stem)``, ``("smir_id", ID)`` for ``SMIR.<name>.<ID>``,
        and ``("case_id", "<sub>_<ses>")``/``("case_id", "<sub>")`` for ISLES 2022 names.
    """
    name = Path(path).name
    stem = strip_image_suffix(name) or name
    names = [("case_id", stem)]
    smir = _SMIR_RE.match(stem)
    if smir:
        names.insert(0, ("smir_id", smir.group(1)))
    bids = _ISLES22_RE.match(stem)
    if bids:
        subject, session = bids.group(1), bids.group(2)
        if session:
            names.append(("case_id", f"{subject}_{session}"))
        names.append(("case_id", subject))
    return names


def resolve_prediction(path: str | Path, cases: Sequence[EvaluationCase]) -> tuple[EvaluationCase | None, str | None]:
    """Find the case a prediction file belongs to.

    Args:
        path: the prediction file.
        cases: the candidate cases.

    Returns:
        ``(case, None)`` on success, else ``(None, why)``: no case has that name, or several do.
    """
    tried = []
    for kind, value in prediction_names(path):
        if kind == "smir_id":
            found = [c for c in cases if c.smir_id == value]
        else:
            found = [c for c in cases if c.key == value] or [c for c in cases if c.case_id == value]
        if len(found) == 1:
            return found[0], None
        if len(found) > 1:
            return None, f"{kind} {value!r} fits several cases ({', '.join(c.key for c in found)})"
        tried.append(f"{kind} {value!r}")
    return None, f"no case with {' or '.join(tried)}"


def describe_record(case: EvaluationCase) -> str:
    """A record as a message names it: split, case id, and its label (or an image) file."""
    text = f"{case.split or 'unsplit'} record {case.case_id!r}"
    if case.label:
        text += f" (label {case.label}"
    else:
        image = next(iter(case.modalities.values()), None)
        text += f" (no label{f', image {image}' if image else ''}"
    return text + (f", SMIR id {case.smir_id})" if case.smir_id else ")")


def _matches(names: Sequence[tuple[str, str]], records: Sequence[EvaluationCase],
             split: str | None) -> tuple[str, list[EvaluationCase]]:
    """The records that the first matching reading of a name fits (of ``split`` when given), and that reading."""
    tried = []
    for kind, value in names:
        if kind == "smir_id":
            found = [c for c in records if c.smir_id == value]
        else:
            found = [c for c in records if c.case_id == value]
        if split is not None:
            found = [c for c in found if c.split == split]
        if found:
            return f"{kind} {value!r}", found
        tried.append(f"{kind} {value!r}")
    return " or ".join(tried), []


def _choose(reading: str, found: list[EvaluationCase], run_split: str | None) -> tuple[EvaluationCase | None, str]:
    """The one record of ``found``; across splits, the one of ``run_split``. Else ``(None, why)``."""
    if len(found) == 1:
        return found[0], ""
    splits = [c.split for c in found]
    if run_split is not None and splits.count(run_split) == 1 and None not in splits:
        return next(c for c in found if c.split == run_split), ""
    if len(set(splits)) > 1:
        why = (
            f"{reading} names records of several splits: {'; '.join(describe_record(c) for c in found)}; "
            "nothing tells which split this prediction belongs to, so it is not scored against either "
            "(evaluate one split's truth, e.g. TESTING_GROUND_TRUTH, or name predictions by SMIR id with "
            "--format isles2018)"
        )
    else:
        why = f"{reading} fits several records: {'; '.join(describe_record(c) for c in found)}"
    return None, why


def infer_run_split(readings: Sequence[list[EvaluationCase]]) -> str | None:
    """The split of a run: the one split that every name matching a single record points to, or ``None``
    (no such name, or names of both splits)."""
    splits = {found[0].split for found in readings if len(found) == 1}
    return next(iter(splits)) if len(splits) == 1 and None not in splits else None


@dataclass
class Pairing:
    """How prediction files were paired with truth cases.

    Attributes:
        pairs: ``(case, prediction file)`` in the cases' order.
        unmatched_predictions: ``(file, why)`` for predictions with no labelled truth case.
        missing_predictions: truth cases with no prediction.
        duplicates: ``(case, [files])`` for cases that several prediction files name.
        refused: ``(file, why)`` for predictions whose name fits several records (of different splits,
            when the run's split is not known): not scored, and an error.
        without_label: ``(file, record)`` for predictions of a record that has no label (also in
            ``unmatched_predictions``).
        run_split: the split the predictions were found to belong to (see :func:`infer_run_split`).
    """

    pairs: list[tuple[EvaluationCase, Path]]
    unmatched_predictions: list[tuple[Path, str]]
    missing_predictions: list[EvaluationCase]
    duplicates: list[tuple[EvaluationCase, list[Path]]]
    refused: list[tuple[Path, str]] = field(default_factory=list)
    without_label: list[tuple[Path, EvaluationCase]] = field(default_factory=list)
    run_split: str | None = None


def pair_predictions(
    predictions: Sequence[str | Path],
    cases: Sequence[EvaluationCase],
    records: Sequence[EvaluationCase] | None = None,
    split: str | None = None,
    run_case_ids: Sequence[str] = (),
) -> Pairing:
    """Pair prediction files with truth cases by case id, SMIR submission name or ISLES 2022 name.

    Args:
        predictions: prediction files.
        cases: labelled truth cases (unique ``key`` values).
        records: every record of the truth, labelled or not (``cases`` among them, as the same objects);
            default ``cases``. A prediction naming an unlabelled record is that record's, not a
            labelled namesake's of the other split.
        split: pair with records of this split only (``None``: any).
        run_case_ids: more case ids of the run (a manifest's cases), used to tell the run's split.

    Returns:
        The :class:`Pairing`.
    """
    records = list(cases) if records is None else list(records)
    readings = [(Path(path), *_matches(prediction_names(path), records, split)) for path in predictions]
    run_split = split or infer_run_split(
        [found for _, _, found in readings] + [_matches([("case_id", i)], records, None)[1] for i in run_case_ids]
    )
    chosen: dict[str, list[Path]] = {}
    unmatched: list[tuple[Path, str]] = []
    refused: list[tuple[Path, str]] = []
    without_label: list[tuple[Path, EvaluationCase]] = []
    for path, reading, found in readings:
        if not found:
            where = f" of split {split!r}" if split else ""
            unmatched.append((path, f"no case{where} with {reading}"))
            continue
        case, why = _choose(reading, found, run_split)
        if case is None:
            refused.append((path, why))
        elif not case.label:
            unmatched.append((path, f"{describe_record(case)} has no ground-truth label"))
            without_label.append((path, case))
        else:
            chosen.setdefault(case.key, []).append(path)
    pairs, duplicates, missing = [], [], []
    for case in cases:
        files = chosen.get(case.key)
        if not files:
            missing.append(case)
        elif len(files) > 1:
            duplicates.append((case, files))
        else:
            pairs.append((case, files[0]))
    return Pairing(pairs, unmatched, missing, duplicates, refused, without_label, run_split)


@dataclass
class Selection:
    """Which files of a prediction folder are scored, after its manifest (see :func:`select_predictions`).

    Attributes:
        files: every prediction file found (see :func:`find_predictions`).
        predictions: the files to score.
        refused: ``(file, why)`` for files the manifest does not list as written.
        missing: manifest entries listed as written whose file is not a prediction file of the folder.
        failed: manifest entries of cases the run failed on.
        manifest: the manifest's path, ``None`` when the folder has none.
        run_ids: the manifest's run id(s).
    """

    files: list[Path]
    predictions: list[Path]
    refused: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[ManifestEntry] = field(default_factory=list)
    failed: list[ManifestEntry] = field(default_factory=list)
    manifest: Path | None = None
    run_ids: list[str] = field(default_factory=list)


def select_predictions(pred_dir: str | Path) -> Selection:
    """The prediction files of ``pred_dir`` that its ``manifest.csv`` lists as written by its run.

    Without a manifest every prediction file is selected, and a warning says that nothing tells which
    run wrote them. With one, a prediction file it does not list as ``written`` (not listed, in a
    subfolder, or listed as failed) is refused: a stale result or a file copied in.

    Raises:
        FileNotFoundError: ``pred_dir`` is not a folder.
        ValueError: the manifest is malformed.
    """
    pred_dir = Path(pred_dir)
    files = find_predictions(pred_dir)
    entries = read_manifest(pred_dir)
    if entries is None:
        if files:
            warnings.warn(
                f"prediction folder {str(pred_dir)!r} has no {MANIFEST_NAME}: cannot tell which run wrote its "
                f"{len(files)} prediction file(s) (stale results of an older run would be scored too); every one "
                "is scored. predict writes the manifest; masks from another tool come without one",
                UserWarning, stacklevel=3,
            )
        return Selection(files, list(files))
    manifest = pred_dir / MANIFEST_NAME
    run_ids = list(dict.fromkeys(e.run_id for e in entries))
    runs = f"run {', '.join(run_ids)}" if run_ids else "an empty run"
    written = {e.file: e for e in entries if e.status == WRITTEN and e.file}
    failed = [e for e in entries if e.status == FAILED]
    failed_files = {e.file: e for e in failed if e.file}
    failed_ids = {e.case_id: e for e in failed}
    by_name = {p.relative_to(pred_dir).as_posix(): p for p in files}
    predictions, refused = [], []
    for name, path in by_name.items():
        if name in written:
            predictions.append(path)
            continue
        entry = failed_files.get(name) or next(
            (failed_ids[v] for k, v in prediction_names(path) if k == "case_id" and v in failed_ids), None)
        if entry is not None:
            why = (f"{manifest} lists case {entry.case_id!r} as failed in {runs}"
                   f"{f' ({entry.error})' if entry.error else ''}, so this file is not that run's result")
        else:
            why = f"not listed in {manifest}, so it was not written by the run the manifest describes ({runs})"
        refused.append((path, why + "; a stale result or a file copied in: not scored (remove it, or predict "
                        "again with --overwrite into this folder)"))
    missing = [e for e in entries if e.status == WRITTEN and e.file not in by_name]
    return Selection(files, predictions, refused, missing, failed, manifest, run_ids)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def _read_mask(case: EvaluationCase, path: str | Path, what: str) -> tuple[np.ndarray, Geometry]:
    try:
        data, geometry = read_volume(path)
    except (FileNotFoundError, ValueError) as err:
        raise CaseError(case.key, str(path), f"cannot read the {what}: {err}") from err
    if data.ndim != 3 and data.ndim != 2:
        raise CaseError(case.key, str(path), f"the {what} has shape {data.shape}; expected a 3D mask")
    if what == "prediction":
        try:
            mask = binary_label(data, case.key, str(path), what="prediction")
        except CaseError as err:
            # the profile's label_values concern truth labels; a prediction is written as 0/1 by predict
            found = err.message.split(". If the dataset")[0]
            raise CaseError(
                case.key, str(path),
                f"the prediction is not a binary mask: {found}; write 0/1 masks (as predict does), not "
                "probabilities or class maps",
            ) from None
    else:
        mask = binary_label(data, case.key, str(path), label_values=case.label_values, what="label")
    return mask != 0, geometry


def _check_grid(case: EvaluationCase, path: str, geometry: Geometry, truth_path: str, truth_geometry: Geometry,
                what: str, tolerance_mm: float) -> None:
    difference = grid_difference(geometry, truth_geometry, tolerance_mm)
    if difference is not None:
        raise CaseError(
            case.key, path,
            f"the {what} {path} is not on the grid of the truth {truth_path}: {difference}",
        )


def _read_map(case: EvaluationCase, name: str, truth_path: str, truth_geometry: Geometry,
              tolerance_mm: float) -> np.ndarray:
    path = case.modality(name)
    if path is None:
        raise CaseError(
            case.key, case.label,
            f"no {name} map for this case (modalities known: {', '.join(case.modalities) or 'none'}); "
            "give the datalist with --images",
        )
    try:
        data, geometry = read_volume(path)
    except (FileNotFoundError, ValueError) as err:
        raise CaseError(case.key, path, f"cannot read the {name} map: {err}") from err
    _check_grid(case, path, geometry, truth_path, truth_geometry, f"{name} map", tolerance_mm)
    return np.nan_to_num(np.asarray(data, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _blank_row(case_id: str, method: str, status: str, prediction: str | None, truth: str | None,
               error: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {c: math.nan for c in ROW_COLUMNS}
    row.update(case_id=case_id, method=method, status=status, prediction=prediction or "", truth=truth or "",
               error=error)
    return row


@dataclass
class EvaluationResult:
    """What :func:`evaluate_predictions` found.

    Attributes:
        rows: one dict per case and method with :data:`ROW_COLUMNS` (``status`` is ``ok``,
            ``failed``, ``no_truth``, ``no_prediction`` or ``refused``; metrics are NaN unless ``ok``).
        clinical: one dict per prediction whose case has a Tmax map, with :data:`CLINICAL_COLUMNS`.
        failures: ``{"case_id", "method", "files", "error"}`` for each case that could not be scored.
        unmatched_predictions: ``{"prediction", "reason"}`` for predictions with no truth case.
        missing_predictions: ``{"case_id", "truth"}`` for truth cases with no prediction.
        summary: the summary dict written as JSON (see :func:`summarize`).
        pairs: the scored ``(case, prediction file)`` pairs (the report draws them).
        files: what was written: ``metrics``, ``summary`` and ``clinical`` -> path.
        refused_predictions: ``{"prediction", "reason"}`` for prediction files that are not scored because
            they cannot be trusted: not written by the run the folder's manifest describes, or a name
            that fits records of several splits.
    """

    rows: list[dict[str, Any]]
    clinical: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    unmatched_predictions: list[dict[str, str]]
    missing_predictions: list[dict[str, str]]
    summary: dict[str, Any]
    pairs: list[tuple[EvaluationCase, Path]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    refused_predictions: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no case failed and no prediction was refused (files without truth do not count)."""
        return not self.failures and not self.refused_predictions

    def table(self, method: str | None = None) -> pd.DataFrame:
        """The rows as a DataFrame (of one method when given), columns in :data:`ROW_COLUMNS` order."""
        frame = pd.DataFrame(self.rows, columns=list(ROW_COLUMNS))
        return frame if method is None else frame[frame["method"] == method].reset_index(drop=True)


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


def _clinical_row(case: EvaluationCase, prediction: Path, pred: np.ndarray, spacing, tmax: np.ndarray,
                  truth: np.ndarray | None, threshold: np.ndarray | None, tmax_threshold_s: float) -> dict[str, Any]:
    core = volume_ml(pred, spacing)
    hypo = volume_ml(tmax > tmax_threshold_s, spacing)
    if core > 0:
        ratio = hypo / core
    else:
        ratio = math.inf if hypo > 0 else math.nan
    return {
        "case_id": case.key,
        "prediction": str(prediction),
        "core_ml": core,
        "hypoperfusion_ml": hypo,
        "mismatch_ml": hypo - core,
        "mismatch_ratio": ratio,
        "truth_core_ml": volume_ml(truth, spacing) if truth is not None else math.nan,
        "threshold_core_ml": volume_ml(threshold, spacing) if threshold is not None else math.nan,
        "tmax": case.modality("Tmax") or "",
    }


def _score_pair(case: EvaluationCase, prediction: Path, baseline: str | None, tolerance_mm: float,
                tmax_threshold_s: float, rows: list, clinical: list, failures: list) -> None:
    truth_path = str(case.label)
    pred_path = str(prediction)
    try:
        truth, truth_geometry = _read_mask(case, truth_path, "truth")
        pred, pred_geometry = _read_mask(case, pred_path, "prediction")
        _check_grid(case, pred_path, pred_geometry, truth_path, truth_geometry, "prediction", tolerance_mm)
        spacing = truth_geometry.spacing[: truth.ndim]
        rows.append({**_blank_row(case.key, "model", "ok", pred_path, truth_path),
                     **case_metrics(pred, truth, spacing)})
    except (CaseError, ValueError) as err:
        rows.append(_blank_row(case.key, "model", "failed", pred_path, truth_path, str(err)))
        failures.append({"case_id": case.key, "method": "model", "files": [pred_path, truth_path], "error": str(err)})
        return
    threshold_mask = None
    tmax: np.ndarray | None = None
    tmax_error: CaseError | None = None
    if case.modality("Tmax") is not None:
        try:
            tmax = _read_map(case, "Tmax", truth_path, truth_geometry, tolerance_mm)
        except CaseError as err:
            tmax_error = err
    if baseline == "threshold":
        cbf_path = case.modality("CBF") or ""
        tmax_path = case.modality("Tmax") or ""
        try:
            cbf = _read_map(case, "CBF", truth_path, truth_geometry, tolerance_mm)
            if tmax is None:
                raise tmax_error or CaseError(
                    case.key, truth_path,
                    f"no Tmax map for this case (modalities known: {', '.join(case.modalities) or 'none'}); "
                    "give the datalist with --images",
                )
            try:
                threshold_mask = threshold_rule(cbf, tmax, tmax_threshold_s=tmax_threshold_s)
            except ValueError as err:
                raise CaseError(case.key, cbf_path, f"threshold rule on {cbf_path} and {tmax_path}: {err}") from err
            rows.append({**_blank_row(case.key, "threshold", "ok", f"threshold({cbf_path}, {tmax_path})", truth_path),
                         **case_metrics(threshold_mask, truth, spacing)})
        except CaseError as err:
            rows.append(_blank_row(case.key, "threshold", "failed", "", truth_path, str(err)))
            failures.append({"case_id": case.key, "method": "threshold",
                             "files": [f for f in (cbf_path, tmax_path, truth_path) if f], "error": str(err)})
    if tmax is not None:
        clinical.append(_clinical_row(case, prediction, pred, spacing, tmax, truth, threshold_mask, tmax_threshold_s))
    elif tmax_error is not None and baseline != "threshold":
        failures.append({"case_id": case.key, "method": "clinical", "files": [case.modality("Tmax")],
                         "error": str(tmax_error)})


def _clinical_without_truth(case: EvaluationCase, prediction: Path, tolerance_mm: float, tmax_threshold_s: float,
                            clinical: list, failures: list) -> None:
    tmax_file = str(case.modality("Tmax"))
    try:
        pred, pred_geometry = _read_mask(case, str(prediction), "prediction")
        try:
            tmax_data, tmax_geometry = read_volume(tmax_file)
        except (FileNotFoundError, ValueError) as err:
            raise CaseError(case.key, tmax_file, f"cannot read the Tmax map: {err}") from err
        difference = grid_difference(pred_geometry, tmax_geometry, tolerance_mm)
        if difference is not None:
            raise CaseError(case.key, str(prediction),
                            f"the prediction {prediction} is not on the grid of the Tmax map {tmax_file}: {difference}")
        tmax = np.nan_to_num(np.asarray(tmax_data, dtype=np.float64))
    except CaseError as err:
        failures.append({"case_id": case.key, "method": "clinical", "files": [str(prediction), tmax_file],
                         "error": str(err)})
        return
    clinical.append(_clinical_row(case, prediction, pred, pred_geometry.spacing[: pred.ndim], tmax, None, None,
                                  tmax_threshold_s))


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    frame = pd.DataFrame(list(rows), columns=list(columns))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return path


def output_paths(out: str | Path) -> dict[str, Path]:
    """The files written for ``--out metrics.csv``: ``metrics``, ``summary`` (``<stem>_summary.json``)
    and ``clinical`` (``<stem>_clinical.csv``), all beside it."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return {
        "metrics": out,
        "summary": out.with_name(f"{stem}_summary.json"),
        "clinical": out.with_name(f"{stem}_clinical.csv"),
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _listing(items: Sequence[str], limit: int = 10) -> str:
    items = list(items)
    return "; ".join(items[:limit]) + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def nothing_to_score_message(pred: str | Path, truth: str | Path, kind: str, selection: Selection,
                             cases: Sequence[EvaluationCase], records: Sequence[EvaluationCase],
                             reasons: Sequence[str]) -> str:
    """The one paragraph of an evaluation that found nothing to pair and score: where it looked, for which
    file names, what it found, and why each prediction was not paired."""
    found = f"found {len(selection.files)} prediction file(s)"
    if selection.manifest is not None:
        found += (f", {len(selection.predictions)} of them listed as written by {selection.manifest}"
                  + (f", which lists {len(selection.failed)} case(s) as failed" if selection.failed else ""))
    ids = [c.key for c in cases]
    text = (
        f"nothing to score: no prediction could be paired with a labelled truth case. Looked in "
        f"{str(pred)!r} (and its subfolders) for masks named {', '.join(PREDICTION_PATTERNS)} (leaving out "
        f"{', '.join(RUN_FILES)}, *{PROBABILITIES_SUFFIX} and hidden files): {found}. Truth {str(truth)!r} "
        f"({kind}): {len(cases)} labelled case(s) of {len(records)} record(s)"
        + (f" ({', '.join(ids[:10])}{', ...' if len(ids) > 10 else ''})" if ids else "")
    )
    if reasons:
        text += f". Not paired: {_listing(reasons, 5)}"
    return text + ". Check that --pred and --truth are about the same cases (and the same split)"


def evaluate_predictions(
    pred: str | Path,
    truth: str | Path,
    out: str | Path | None = None,
    baseline: str | None = None,
    images: str | Path | None = None,
    tolerance_mm: float = 0.01,
    tmax_threshold_s: float = 6.0,
    split: str | None = None,
) -> EvaluationResult:
    """Score every prediction file of a folder against its truth case.

    Args:
        pred: folder of prediction masks (searched recursively), named as the module docstring says.
            When it holds ``manifest.csv`` only the files the manifest lists as written are scored (see
            :func:`select_predictions`).
        truth: a datalist JSON, a dataset root, a ``TESTING_GROUND_TRUTH`` folder or a flat folder of
            ``<case_id>`` masks (see :func:`load_cases`). A datalist's profile may map label values
            (``label_values``); every label must hold {0, 1} after it.
        out: the per-case CSV to write; ``<stem>_summary.json`` and (when some case has a Tmax map)
            ``<stem>_clinical.csv`` go beside it. ``None`` writes nothing.
        baseline: ``"threshold"`` also scores the clinical threshold rule (rCBF < 30 % and Tmax > 6 s)
            on the same cases, from each case's CBF and Tmax maps.
        images: a datalist JSON giving the cases' modality files when ``truth`` does not (needed for
            the baseline and the clinical table).
        tolerance_mm: how far spacing, directions and origin of a prediction may differ from its truth.
        tmax_threshold_s: the hypoperfusion threshold of the clinical table (and of the baseline rule).
        split: pair predictions with truth records of this split only (``None``: the split their names
            tell, see the module docstring).

    Returns:
        The :class:`EvaluationResult`. Unpaired files, refused files and unscorable cases are in it (and
        warned about with ``warnings.warn``), not raised; ``result.ok`` is False when a case failed or a
        file was refused.

    Raises:
        FileNotFoundError: ``pred``, ``truth`` or ``images`` does not exist.
        LayoutError, CaseError, ValueError: ``truth``, ``images`` or the manifest cannot be read; no truth
            case; an unknown ``baseline``; the baseline needs CBF and Tmax maps that no case has; or no
            prediction could be paired with a labelled truth case (the message says where evaluate looked
            and what it found).
    """
    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    if images is not None and not Path(images).exists():
        raise FileNotFoundError(f"images datalist {str(images)!r} not found")
    selection = select_predictions(pred)
    predictions = selection.predictions
    kind, records = load_truth_records(truth, images)
    cases = [c for c in records if c.label]
    if not cases:
        raise LayoutError(
            f"truth {str(truth)!r} ({kind}): no case with a ground-truth mask found ({len(records)} record(s), "
            "none with a label); give the labelled cases (a datalist with labels, a TESTING_GROUND_TRUTH folder "
            "or a folder of <case_id> masks)"
        )
    if baseline == "threshold" and not any(c.modality("CBF") and c.modality("Tmax") for c in cases):
        raise ValueError(
            f"--baseline threshold needs each case's CBF and Tmax maps, and truth {str(truth)!r} ({kind}) "
            "gives none: pass the datalist with --images datalist.json (or as --truth)"
        )

    pairing = pair_predictions(predictions, cases, records, split=split,
                               run_case_ids=[e.case_id for e in selection.failed + selection.missing])
    refused = [{"prediction": str(p), "reason": why} for p, why in selection.refused + pairing.refused]
    if not pairing.pairs and not pairing.duplicates:
        reasons = [f"{Path(r['prediction']).name}: {r['reason']}" for r in refused]
        reasons += [f"{path.name}: {why}" for path, why in pairing.unmatched_predictions]
        reasons += [f"case {e.case_id!r}: listed as failed in {selection.manifest}" for e in selection.failed]
        reasons += [f"{e.file or e.case_id}: listed as written in {selection.manifest} but missing"
                    for e in selection.missing]
        raise ValueError(nothing_to_score_message(pred, truth, kind, selection, cases, records, reasons))

    rows: list[dict[str, Any]] = []
    clinical: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for case, prediction in pairing.pairs:
        _score_pair(case, prediction, baseline, tolerance_mm, tmax_threshold_s, rows, clinical, failures)
    for case, files in pairing.duplicates:
        error = CaseError(case.key, str(files[0]),
                          f"several predictions name this case: {', '.join(str(f) for f in files)}; keep one")
        rows.append(_blank_row(case.key, "model", "failed", ";".join(str(f) for f in files), case.label, str(error)))
        failures.append({"case_id": case.key, "method": "model", "files": [str(f) for f in files], "error": str(error)})

    # The manifest's failed cases, and the files it lists as written that are not there: failed cases.
    accounted: set[str] = set()
    runs = ", ".join(selection.run_ids)
    for entry in selection.failed + selection.missing:
        by_id = entry.status == FAILED or not entry.file
        names = [("case_id", entry.case_id)] if by_id else prediction_names(entry.file)
        reading, found = _matches(names, records, split)
        case = _choose(reading, found, pairing.run_split)[0] if found else None
        key = case.key if case is not None and case.label else entry.case_id
        if entry.status == FAILED:
            file = str(Path(pred) / FAILURES_NAME) if (Path(pred) / FAILURES_NAME).is_file() else str(selection.manifest)
            error = CaseError(key, file, f"predict failed on this case in run {runs}"
                              f"{f' ({entry.error})' if entry.error else ''}; it has no prediction to score")
        else:
            file = str(Path(pred) / entry.file) if entry.file else str(selection.manifest)
            error = CaseError(key, file, f"{selection.manifest} lists this case's prediction as written by run {runs}, "
                              "but the folder holds no such prediction file; predict this case again")
        truth_file = case.label if case is not None and case.label else None
        rows.append(_blank_row(key, "model", "failed", file, truth_file, str(error)))
        failures.append({"case_id": key, "method": "predict" if entry.status == FAILED else "model",
                         "files": [f for f in (file, truth_file) if f], "error": str(error)})
        if case is not None and case.label:
            accounted.add(case.key)

    # Predictions on cases without truth still get their clinical volumes when the case's maps are known.
    truth_ids = {c.case_id for c in cases}
    record_of = {}
    for path, record in pairing.without_label:
        if record.modality("Tmax"):
            if record.key in truth_ids:
                record.key = f"{record.split or 'unknown'}/{record.case_id}"
            record_of[path] = record
    image_cases: list[EvaluationCase] = []
    if images is not None and any(p not in record_of for p, _ in pairing.unmatched_predictions):
        try:
            loaded = _datalist_cases(Path(images), labels=False) if Path(images).is_file() else load_cases(images)[1]
            image_cases = [c for c in loaded if not c.label and c.modality("Tmax")]
        except (LayoutError, CaseError, ValueError):
            image_cases = []
        _assign_keys(image_cases, strict=False)
        for case in image_cases:
            if case.key in truth_ids:
                case.key = f"{case.split or 'unknown'}/{case.case_id}"
    unmatched = []
    for path, why in pairing.unmatched_predictions:
        unmatched.append({"prediction": str(path), "reason": why})
        rows.append(_blank_row(strip_image_suffix(path.name) or path.name, "model", "no_truth", str(path), None, why))
        case = record_of.get(path)
        if case is None and image_cases:
            case, _ = resolve_prediction(path, image_cases)
        if case is not None:
            _clinical_without_truth(case, path, tolerance_mm, tmax_threshold_s, clinical, failures)
    for item in refused:
        path = Path(item["prediction"])
        rows.append(_blank_row(strip_image_suffix(path.name) or path.name, "model", "refused", str(path), None,
                               item["reason"]))
    missing_cases = [c for c in pairing.missing_predictions if c.key not in accounted]
    missing = [{"case_id": c.key, "truth": str(c.label)} for c in missing_cases]
    for case in missing_cases:
        rows.append(_blank_row(case.key, "model", "no_prediction", None, case.label))

    if refused:
        warnings.warn(
            f"{len(refused)} prediction file(s) refused, not scored: "
            + _listing([f"{Path(r['prediction']).name} ({r['reason']})" for r in refused]),
            UserWarning, stacklevel=2,
        )
    if unmatched:
        warnings.warn(
            f"{len(unmatched)} prediction(s) have no truth case in {truth} and are not scored: "
            + _listing([f"{Path(u['prediction']).name} ({u['reason']})" for u in unmatched]),
            UserWarning, stacklevel=2,
        )
    if missing:
        warnings.warn(
            f"{len(missing)} truth case(s) have no prediction in {pred}: "
            + ", ".join(m["case_id"] for m in missing[:20]) + (", ..." if len(missing) > 20 else ""),
            UserWarning, stacklevel=2,
        )

    counts = {
        "truth_cases": len(cases),
        "predictions": len(predictions),
        "paired": len(pairing.pairs),
        "scored": sum(1 for r in rows if r["method"] == "model" and r["status"] == "ok"),
        "failed_cases": len({f["case_id"] for f in failures}),
        "refused_predictions": len(refused),
        "predictions_without_truth": len(unmatched),
        "truths_without_prediction": len(missing),
    }
    summary = summarize(rows, counts)
    summary.update(
        {
            "prediction_dir": str(pred),
            "truth": str(truth),
            "truth_kind": kind,
            "images": None if images is None else str(images),
            "baseline": baseline,
            "manifest": None if selection.manifest is None else {
                "path": str(selection.manifest), "run_ids": selection.run_ids,
                "written": len(selection.predictions) + len(selection.missing), "failed": len(selection.failed),
            },
            "split": pairing.run_split,
            "conventions": {
                "dice": "1.0 when both masks are empty",
                "lesion_f1": "26-connected lesions; 1.0 when both masks are empty",
                "hd95_mm, assd_mm": "NaN when either mask is empty; left out of mean/median/std (n_undefined)",
                "precision, recall": "1.0 when both masks are empty; NaN when the denominator is empty",
                "std": "sample standard deviation (ddof=1)",
                "mismatch_ratio": "hypoperfusion / core; inf when the core is empty, NaN when both are",
                "tmax_threshold_s": tmax_threshold_s,
            },
            "unmatched_predictions": unmatched,
            "refused_predictions": refused,
            "missing_predictions": missing,
            "failures": failures,
            "cases": [
                {"case_id": c.key, "prediction": str(p), "truth": c.label, "modalities": c.modalities}
                for c, p in pairing.pairs
            ],
        }
    )
    result = EvaluationResult(rows, clinical, failures, unmatched, missing, summary, list(pairing.pairs),
                              refused_predictions=refused)
    if out is not None:
        write_outputs(result, out)
    return result


def write_outputs(result: EvaluationResult, out: str | Path) -> dict[str, Path]:
    """Write the per-case CSV, the summary JSON and (when not empty) the clinical CSV, atomically.

    Args:
        result: what :func:`evaluate_predictions` returned.
        out: the per-case CSV path; the others go beside it (see :func:`output_paths`).

    Returns:
        The paths written (also stored in ``result.files``).
    """
    paths = output_paths(out)
    written = {"metrics": _write_csv(paths["metrics"], result.rows, ROW_COLUMNS)}
    if result.clinical:
        written["clinical"] = _write_csv(paths["clinical"], result.clinical, CLINICAL_COLUMNS)
    elif paths["clinical"].exists():
        # A clinical table left from an earlier run would no longer match the metrics beside it.
        os.remove(paths["clinical"])
    summary = dict(result.summary)
    summary["files"] = {k: str(v) for k, v in {**written, "summary": paths["summary"]}.items()}
    written["summary"] = atomic_write_json(paths["summary"], _json_safe(summary))
    result.summary = summary
    result.files = written
    return written


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


def _records(path: Path) -> list[dict[str, Any]]:
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    rows = []
    for record in frame.to_dict(orient="records"):
        rows.append({k: ("" if isinstance(v, float) and math.isnan(v) and k in ("prediction", "truth", "error", "tmax")
                         else v) for k, v in record.items()})
    return rows


def load_result(out: str | Path) -> EvaluationResult:
    """Read back an evaluation written by :func:`write_outputs` (``--out metrics.csv``).

    Args:
        out: the per-case CSV; its ``<stem>_summary.json`` must lie beside it (the clinical CSV is
            read when present).

    Returns:
        The :class:`EvaluationResult`, with ``pairs`` rebuilt from the summary's ``cases``.

    Raises:
        FileNotFoundError: the CSV or its summary is missing.
        ValueError: a file is not what :func:`write_outputs` writes.
    """
    paths = output_paths(out)
    for name in ("metrics", "summary"):
        if not paths[name].is_file():
            raise FileNotFoundError(f"evaluation {name} file {str(paths[name])!r} not found")
    try:
        summary = json.loads(paths["summary"].read_text())
        rows = _records(paths["metrics"])
        clinical = _records(paths["clinical"]) if paths["clinical"].is_file() else []
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"{paths['metrics']}: cannot read the evaluation back ({err})") from err
    missing = [c for c in ("case_id", "method", "status") if rows and c not in rows[0]]
    if missing or not isinstance(summary, dict):
        raise ValueError(f"{paths['metrics']}: not an evaluation table (missing {', '.join(missing) or 'summary'})")
    pairs = []
    for item in summary.get("cases", []):
        case = EvaluationCase(
            case_id=item["case_id"].split("/")[-1], label=item.get("truth"),
            modalities=dict(item.get("modalities") or {}), key=item["case_id"],
        )
        pairs.append((case, Path(item["prediction"])))
    return EvaluationResult(
        rows=rows,
        clinical=clinical,
        failures=list(summary.get("failures", [])),
        unmatched_predictions=list(summary.get("unmatched_predictions", [])),
        missing_predictions=list(summary.get("missing_predictions", [])),
        summary=summary,
        pairs=pairs,
        files={k: v for k, v in paths.items() if v.is_file()},
        refused_predictions=list(summary.get("refused_predictions", [])),
    )
