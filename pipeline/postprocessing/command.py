"""``python -m pipeline postprocess``: fit the post-processing of a training run or a cross-validation on its
validation folds, as nnU-Net determines its post-processing from the cross-validation.

Each fold's validation cases are predicted (probabilities kept) by the model of that fold, which did not train on
them, into ``RUN/validation/`` (``CV/fold_<k>/validation/``); :func:`~pipeline.postprocessing.fitting.fit_postprocessing`
then chooses the threshold and smallest component over all of them, and ``postprocessing.json`` is written into the
run (or cross-validation) folder, where ``predict --model`` finds it.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import CaseError
from pipeline.postprocessing.fitting import ValidationCase, fit_postprocessing
from pipeline.postprocessing.lesion_mask import voxel_volume_ml
from pipeline.postprocessing.store import write_postprocessing

__all__ = ["VALIDATION_FOLDER", "fold_models", "run_postprocess", "validation_cases"]

# where a run's validation predictions go (nnU-Net keeps them in fold_<k>/validation too)
VALIDATION_FOLDER = "validation"


def fold_models(model: Path, fold: int | None) -> list[tuple[int, Path]]:
    """``(fold, run folder)`` pairs of a ``--model``: every ``fold_<k>`` of a cross-validation folder, or the one run
    with its ``fold``.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: a single run without a fold number.
    """
    from pipeline.predict.models import FOLD_PREFIX, fold_runs

    if not model.is_dir():
        raise FileNotFoundError(f"model folder {str(model)!r} not found: give a train --output folder")
    folds = fold_runs(model)
    if folds:
        return [(int(run.name[len(FOLD_PREFIX):]), run) for run in folds]
    if fold is None:
        raise ValueError(f"{model} is a single training run: say which fold it validated on with --fold K")
    return [(int(fold), model)]


def _validation_datalist(datalist_path: Path, fold: int, folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A datalist whose ``testing`` list is fold ``fold``'s validation records (absolute paths), written to
    ``folder``."""
    from pipeline.data.datalist import load_datalist, read_datalist_json

    data = read_datalist_json(datalist_path)
    records = load_datalist(datalist_path, "training", fold=fold)
    if not records:
        raise ValueError(f"datalist {str(datalist_path)!r} has no training records in fold {fold} to validate on")
    content = {k: v for k, v in data.items() if not isinstance(v, list) or k in ("channels",)}
    if isinstance(content.get("root"), str):
        content["root"] = str((datalist_path.resolve().parent / content["root"]).resolve())
    content.update({"training": [], "testing": [{**r, "split": "testing"} for r in records]})
    path = folder / f"validation_fold_{fold}.json"
    path.write_text(json.dumps(content, indent=2), encoding="utf-8")
    return path, records


def validation_cases(records: list[dict[str, Any]], predictions: Path) -> list[ValidationCase]:
    """The :class:`ValidationCase` of each record from the probabilities ``predict --probabilities`` wrote into
    ``predictions`` and the record's label.

    Raises:
        CaseError: a case without its probabilities file, or whose label is off the prediction's grid.
    """
    from pipeline.io.readers import read_array
    from pipeline.predict.names import prediction_filename, probabilities_filename

    cases = []
    for record in records:
        case_id = str(record["case_id"])
        name = prediction_filename("nifti", case_id, str(record.get("reference") or ""), record.get("smir_id"))
        path = predictions / probabilities_filename(name, ".nii.gz")
        if not path.is_file():
            raise CaseError(case_id, str(path), "no validation probabilities: the validation prediction failed for it")
        with np.load(path, allow_pickle=False) as stored:
            foreground = stored["probabilities"].astype(np.float32)
            affine = stored["affine"]
        label = np.asarray(read_array(record["label"])) > 0
        if label.shape != foreground.shape:
            raise CaseError(case_id, str(record["label"]), f"label of shape {label.shape} but the prediction is "
                            f"{foreground.shape}: not on the same grid")
        cases.append(ValidationCase(case_id, foreground, label, voxel_volume_ml(affine)))
    return cases


def run_postprocess(args: argparse.Namespace) -> int:
    """Predict each fold's validation cases and fit ``postprocessing.json`` (see the module docstring).

    Args:
        args: ``bundle``, ``datalist``, ``model`` (a training run or a cross-validation folder), ``fold`` (the
            validation fold of a single run), ``tta`` (predict as ``predict --tta`` will), ``set`` (bundle
            overrides), ``debug``.

    Returns:
        0, or the exit status of a validation prediction that failed.

    Raises:
        FileNotFoundError, ValueError, CaseError: a missing model or datalist, a fold without cases, a case
            without its prediction or off its label's grid.
    """
    from pipeline.predict.command import run_predict

    model = Path(args.model).resolve()
    datalist = Path(args.datalist).resolve()
    folds = fold_models(model, getattr(args, "fold", None))
    cases: list[ValidationCase] = []
    with tempfile.TemporaryDirectory(prefix="postprocess-") as work:
        for fold, run in folds:
            listing, records = _validation_datalist(datalist, fold, Path(work))
            output = run / VALIDATION_FOLDER
            print(f"postprocess: predicting the {len(records)} validation case(s) of fold {fold} with {run}")
            predict_args = argparse.Namespace(
                bundle=args.bundle, input=str(listing), output=str(output), format="nifti", name="team",
                split="testing", checkpoint=str(run), model=None, probabilities=True, tta=bool(getattr(args, "tta", False)),
                overwrite=True, strict=False, nproc=1, set=copy.copy(getattr(args, "set", None)), plans=None,
                postprocessing="none", debug=getattr(args, "debug", False),
            )
            status = run_predict(predict_args)
            if status != 0:
                print(f"error: the validation prediction of fold {fold} failed (exit status {status})")
                return status
            cases += validation_cases(records, output)
    fitted = fit_postprocessing(cases)
    path = write_postprocessing(model, fitted, [fold for fold, _ in folds])
    setting = fitted.setting
    print(f"postprocess: {len(cases)} validation case(s); default (threshold 0.5, no component removed): mean Dice "
          f"{fitted.default_dice:.3f}, AVD {fitted.default_avd_ml:.1f} mL; chosen: threshold {setting.threshold:g}, "
          f"components below {setting.min_component_ml:g} mL removed: mean Dice {fitted.chosen_dice:.3f}, AVD "
          f"{fitted.chosen_avd_ml:.1f} mL -> {path}")
    return 0
