"""Scoring one pair: reading the masks and maps, checking their grids, the per-case rows and clinical rows.

A case that cannot be scored (another grid, an unreadable file, a mask whose values are not {0, 1}) is a
failure naming its files; the rows of the other cases go on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.baseline import threshold_rule
from pipeline.checks import binary_label
from pipeline.errors import CaseError
from pipeline.evaluation.cases import EvaluationCase, read_volume
from pipeline.evaluation.result import ROW_COLUMNS
from pipeline.io import Geometry
from pipeline.evaluation.lesion_matching import convention_lesion_counts
from pipeline.metrics import case_metrics, volume_ml
from pipeline.io.geometry import grid_difference


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
                tmax_threshold_s: float, rows: list, clinical: list, failures: list,
                metrics: str = "isles2022") -> None:
    truth_path = str(case.label)
    pred_path = str(prediction)
    try:
        truth, truth_geometry = _read_mask(case, truth_path, "truth")
        pred, pred_geometry = _read_mask(case, pred_path, "prediction")
        _check_grid(case, pred_path, pred_geometry, truth_path, truth_geometry, "prediction", tolerance_mm)
        spacing = truth_geometry.spacing[: truth.ndim]
        rows.append({**_blank_row(case.key, "model", "ok", pred_path, truth_path),
                     **case_metrics(pred, truth, spacing, convention_lesion_counts(metrics, pred, truth))})
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
                         **case_metrics(threshold_mask, truth, spacing,
                                        convention_lesion_counts(metrics, threshold_mask, truth))})
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
