"""Scoring a prediction folder against its truth: :func:`evaluate_predictions`, which selects, pairs, scores,
summarizes and writes, and the message of an evaluation that found nothing to score.

A prediction without truth and a truth without prediction are listed (rows with status ``no_truth`` /
``no_prediction``) and warned about; a refused file (status ``refused``) and a case that cannot be scored
are in the result, not raised, and make ``result.ok`` false.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

from pipeline.errors import CaseError, LayoutError
from pipeline.evaluation.cases import EvaluationCase
from pipeline.evaluation.outputs import write_outputs
from pipeline.evaluation.pairing import (
    PREDICTION_PATTERNS, _choose, _matches, pair_predictions, prediction_names, resolve_prediction,
)
from pipeline.evaluation.result import EvaluationResult
from pipeline.evaluation.lesion_matching import check_convention
from pipeline.evaluation.scoring import _blank_row, _clinical_without_truth, _score_pair
from pipeline.evaluation.selection import Selection, select_predictions
from pipeline.evaluation.summary import summarize
from pipeline.evaluation.truth import _assign_keys, _datalist_cases, load_cases, load_truth_records
from pipeline.formats import parse_case_file_name
from pipeline.manifest import FAILED, FAILURES_NAME, PROBABILITIES_SUFFIX, RUN_FILES

BASELINES = ("threshold",)
LESION_CONVENTIONS = {
    "isles2022": "26-connected lesions, found when touched; 1.0 when both masks are empty",
    "isles2024": "connected components matched one to one at IoU >= 0.2 (panoptica, as the challenge); 1.0 when both "
                 "masks are empty",
}


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
    metrics: str = "isles2022",
) -> EvaluationResult:
    """Score every prediction file of a folder against its truth case.

    Args:
        pred: folder of prediction masks (searched recursively), named as :mod:`pipeline.evaluation.pairing` says.
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
            tell, see :mod:`pipeline.evaluation.pairing`).
        metrics: the lesion-wise convention, ``isles2022`` (any overlap finds a lesion) or ``isles2024`` (one-to-one
            matching at IoU 0.2 by panoptica), see :mod:`pipeline.evaluation.lesion_matching`.

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
    check_convention(metrics)
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
                               run_case_ids=[e.case_id for e in selection.failed + selection.missing],
                               listed_case_ids=selection.case_ids)
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
        _score_pair(case, prediction, baseline, tolerance_mm, tmax_threshold_s, rows, clinical, failures, metrics)
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
        rows.append(_blank_row(parse_case_file_name(path.name), "model", "no_truth", str(path), None, why))
        case = record_of.get(path)
        if case is None and image_cases:
            case, _ = resolve_prediction(path, image_cases)
        if case is not None:
            _clinical_without_truth(case, path, tolerance_mm, tmax_threshold_s, clinical, failures)
    for item in refused:
        path = Path(item["prediction"])
        rows.append(_blank_row(parse_case_file_name(path.name), "model", "refused", str(path), None,
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
            "metrics": metrics,
            "conventions": {
                "dice": "1.0 when both masks are empty",
                "lesion_f1": LESION_CONVENTIONS[metrics],
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
