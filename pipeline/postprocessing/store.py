"""``postprocessing.json``: the post-processing fitted for a training run (or a cross-validation), and where predict
finds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.io import atomic_write_json
from pipeline.io.jsonfile import read_json
from pipeline.postprocessing.fitting import FittedPostprocessing
from pipeline.postprocessing.lesion_mask import LesionPostprocessing

__all__ = ["POSTPROCESSING_NAME", "postprocessing_for", "read_postprocessing", "write_postprocessing"]

POSTPROCESSING_NAME = "postprocessing.json"


def write_postprocessing(folder: str | Path, fitted: FittedPostprocessing, folds: list[Any]) -> Path:
    """Write ``FOLDER/postprocessing.json`` (atomically): the chosen setting, what it and the default score on
    the validation cases, the folds they came from and every setting tried.

    Returns:
        The file written.
    """
    return atomic_write_json(Path(folder) / POSTPROCESSING_NAME, {
        **fitted.setting.as_dict(),
        "validation": {"cases": fitted.cases, "folds": list(folds), "default_mean_dice": round(fitted.default_dice, 6),
                       "chosen_mean_dice": round(fitted.chosen_dice, 6),
                       "default_mean_avd_ml": round(fitted.default_avd_ml, 6),
                       "chosen_mean_avd_ml": round(fitted.chosen_avd_ml, 6)},
        "tried": [{k: round(v, 6) for k, v in row.items()} for row in fitted.table],
    })


def read_postprocessing(path: str | Path) -> LesionPostprocessing:
    """The setting in a ``postprocessing.json``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or without a valid ``threshold`` / ``min_component_ml``.
    """
    what = f"post-processing file {str(path)!r}"
    data = read_json(path, what)
    try:
        return LesionPostprocessing(float(data["threshold"]), float(data["min_component_ml"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{what} holds no valid threshold and min_component_ml ({err}): fit it again with "
                         "`python -m pipeline postprocess`") from None


def postprocessing_for(model_folders: list[Path]) -> Path | None:
    """The ``postprocessing.json`` that belongs to the model predict uses: in the ``--model`` folder (a training run
    or the cross-validation folder whose folds are ensembled) or in a checkpoint's run folder; ``None`` when there
    is none.

    Args:
        model_folders: the folders to look in, most specific first.
    """
    for folder in model_folders:
        candidate = Path(folder) / POSTPROCESSING_NAME
        if candidate.is_file():
            return candidate
    return None
