"""Pairing prediction files with truth cases by name, and telling the split of a run.

A prediction names its case in one of the conventions of :mod:`pipeline.formats`:

- ``<case_id>.nii.gz`` (or ``.nii``, ``.mha``, ``.nrrd``): the case id;
- ``SMIR.<name>.<ID>.nii``: the ISLES 2018 submission name, ID being the SMIR id of the case's CT_MTT
  folder (the datalist's ``smir_id``, or ``mtt_id`` in the synthetic ``TESTING_GROUND_TRUTH/cases.csv``);
- ``<sub>_ses-XXXX_msk.nii.gz`` (ISLES 2022): the subject, or ``<sub>_<ses>`` for multi-session subjects;
- ``<case_id>/images/stroke-lesion-segmentation/output.mha`` (the ISLES 2024 container's output, one folder per case),
  or the container's single ``images/stroke-lesion-segmentation/output.mha``: the case its run's manifest lists for
  the file, else the folder above ``images``.

Splits: a datalist or dataset root holds training and test cases that may share a case id (ISLES 2018's
``case_1``...). A prediction is paired with the record of the split its name matches; when its name
matches a record of each split, the split of the run decides (the one split that the other predictions,
and the manifest's cases, match on their own); when that is not known the prediction is refused, naming
both records, so that a test prediction is never scored against a training label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from pipeline.evaluation.cases import EvaluationCase
from pipeline.formats import (
    parse_case_file_name, parse_isles2018_submission_name, parse_isles2022_name, parse_isles2024_output_name,
)

PREDICTION_PATTERNS = (
    "<case_id>.nii.gz (or .nii, .mha, .nrrd)",
    "SMIR.<name>.<ID>.nii (ID: the SMIR id of the case's CT_MTT folder)",
    "<sub>_ses-XXXX_msk.nii.gz",
    "<case_id>/images/stroke-lesion-segmentation/output.mha",
)


def prediction_names(path: str | Path, listed_case_id: str | None = None) -> list[tuple[str, str]]:
    """The ways a prediction file may name its case, most specific first.

    Args:
        path: a prediction file.
        listed_case_id: the case its run's manifest lists for it, used for names that carry no case id of their
            own (the ISLES 2024 container's ``output.mha``).

    Returns:
        ``(kind, value)`` pairs: ``("case_id", stem)``, ``("smir_id", ID)`` for ``SMIR.<name>.<ID>``,
        ``("case_id", "<sub>_<ses>")``/``("case_id", "<sub>")`` for ISLES 2022 names, and for an ISLES 2024
        container output the listed case then the folder above ``images``.
    """
    container, folder_case = parse_isles2024_output_name(path)
    if container:
        ids = [listed_case_id, folder_case]
        return [("case_id", i) for i in dict.fromkeys(i for i in ids if i)]
    stem = parse_case_file_name(path)
    names = [("case_id", stem)]
    smir_id = parse_isles2018_submission_name(path)
    if smir_id is not None:
        names.insert(0, ("smir_id", smir_id))
    bids = parse_isles2022_name(path)
    if bids is not None:
        subject, session = bids
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
    listed_case_ids: Mapping[Path, str] | None = None,
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
        listed_case_ids: prediction file -> the case its manifest lists it for (see :func:`prediction_names`).

    Returns:
        The :class:`Pairing`.
    """
    records = list(cases) if records is None else list(records)
    listed = {Path(p): c for p, c in (listed_case_ids or {}).items()}
    readings = [(Path(path), *_matches(prediction_names(path, listed.get(Path(path))), records, split))
                for path in predictions]
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
