"""The truth cases: the four truth sources, their label values, and the cases' modality files.

The truth is a datalist JSON (labelled records of both splits, with the ``label_values`` of the dataset
profile it names), the synthetic ``TESTING_GROUND_TRUTH`` folder (its ``cases.csv``, see
:mod:`pipeline.formats`), a dataset root in a known layout (its labelled cases, plus
``TESTING_GROUND_TRUTH/`` when present), or a flat folder of ``<case_id>`` masks. :func:`load_cases` reads
any of them; :func:`load_truth_records` adds the modality files of an images datalist and gives each case
its table name.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pipeline.checks import parse_label_values
from pipeline.data.datalist import load_datalist
from pipeline.data.layouts import detect_layout, discover_cases
from pipeline.errors import CaseError, LayoutError
from pipeline.evaluation.cases import EvaluationCase, _image_files
from pipeline.formats import (
    GROUND_TRUTH_CSV, GROUND_TRUTH_FOLDER, isles2018_folder_pattern, parse_case_file_name, parse_ground_truth_row,
    read_ground_truth_rows,
)


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
                case_id = parse_case_file_name(str(source))
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
    cases = []
    for row in read_ground_truth_rows(table):
        case_id, ot_id, mtt_id = parse_ground_truth_row(row)
        case_dir = folder / case_id
        pattern = isles2018_folder_pattern("OT", ot_id)
        ot_folders = sorted(p for p in case_dir.glob(pattern) if p.is_dir()) if case_dir.is_dir() else []
        images = _image_files(ot_folders[0], recursive=False) if len(ot_folders) == 1 else []
        if len(images) != 1:
            raise CaseError(
                case_id, str(case_dir),
                f"{table} lists this case but its folder does not hold one {pattern}/ folder with one mask "
                f"({len(ot_folders)} folder(s), {len(images)} image(s))",
            )
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
            case_id = parse_case_file_name(mask.name)
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
