"""The post-processing setting the validation folds support: a grid of thresholds and smallest components, scored
by the mean Dice over every validation case, kept only when it beats the default (nnU-Net keeps a post-processing
step only when it improves the cross-validation Dice) without a larger mean absolute volume difference (a lower
threshold buys Dice with over-segmented borders; the ISLES rankings weigh the volume error too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.metrics import dice_score
from pipeline.postprocessing.lesion_mask import DEFAULT_POSTPROCESSING, LesionPostprocessing, lesion_mask

__all__ = ["MIN_GAIN", "MIN_COMPONENT_GRID_ML", "THRESHOLD_GRID", "FittedPostprocessing", "ValidationCase",
           "fit_postprocessing"]

THRESHOLD_GRID = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
MIN_COMPONENT_GRID_ML = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
# a setting replaces the default only when it raises the validation mean Dice by at least this: smaller gains on a
# few validation cases are noise
MIN_GAIN = 0.005


@dataclass(frozen=True)
class ValidationCase:
    """One validation case: its id, foreground probabilities, reference label and voxel volume (mL)."""

    case_id: str
    foreground: np.ndarray
    label: np.ndarray
    voxel_ml: float


@dataclass(frozen=True)
class FittedPostprocessing:
    """The outcome of :func:`fit_postprocessing`.

    Attributes:
        setting: the chosen setting (the default unless one beats it by :data:`MIN_GAIN`).
        default_dice, chosen_dice: the validation mean Dice of the default and of the chosen setting.
        default_avd_ml, chosen_avd_ml: their mean absolute volume differences (mL).
        table: every setting tried: ``threshold``, ``min_component_ml``, ``mean_dice``, ``mean_avd_ml``.
        cases: the number of validation cases.
    """

    setting: LesionPostprocessing
    default_dice: float
    chosen_dice: float
    default_avd_ml: float
    chosen_avd_ml: float
    table: list[dict[str, float]]
    cases: int


def _score(cases: Sequence[ValidationCase], setting: LesionPostprocessing) -> tuple[float, float]:
    dice, avd = [], []
    for case in cases:
        mask = lesion_mask(case.foreground, case.voxel_ml, setting)
        dice.append(dice_score(mask, case.label))
        avd.append(abs(int(mask.sum()) - int(np.count_nonzero(case.label))) * case.voxel_ml)
    return float(np.mean(dice)), float(np.mean(avd))


def fit_postprocessing(
    cases: Sequence[ValidationCase],
    thresholds: Sequence[float] = THRESHOLD_GRID,
    min_components_ml: Sequence[float] = MIN_COMPONENT_GRID_ML,
    min_gain: float = MIN_GAIN,
) -> FittedPostprocessing:
    """Choose the threshold and smallest component that maximise the mean Dice over ``cases`` among the settings
    whose mean absolute volume difference is not above the default's.

    Ties go to the setting nearest the default (threshold 0.5, no component removed).

    Args:
        cases: the validation cases (each fold's cases predicted by the model that did not train on them).
        thresholds, min_components_ml: the grid tried (every pair).
        min_gain: the least gain in mean Dice over the default for another setting to be chosen.

    Returns:
        The :class:`FittedPostprocessing`.

    Raises:
        ValueError: no cases, or a case whose probabilities and label differ in shape.
    """
    if not cases:
        raise ValueError("no validation cases to fit the post-processing on")
    for case in cases:
        if np.shape(case.foreground) != np.shape(case.label):
            raise ValueError(f"case {case.case_id}: probabilities of shape {np.shape(case.foreground)} and a label of "
                             f"shape {np.shape(case.label)}")
    table = []
    for threshold in thresholds:
        for min_ml in min_components_ml:
            setting = LesionPostprocessing(float(threshold), float(min_ml))
            dice, avd = _score(cases, setting)
            table.append({"threshold": float(threshold), "min_component_ml": float(min_ml), "mean_dice": dice,
                          "mean_avd_ml": avd})
    default_dice, default_avd = _score(cases, DEFAULT_POSTPROCESSING)

    def preference(row: dict[str, float]) -> tuple[float, float, float]:
        return (round(row["mean_dice"], 6), -abs(row["threshold"] - 0.5), -row["min_component_ml"])

    allowed = [row for row in table if row["mean_avd_ml"] <= default_avd + 1e-9]
    best = max(allowed, key=preference) if allowed else None
    if best is None or best["mean_dice"] < default_dice + min_gain:
        return FittedPostprocessing(DEFAULT_POSTPROCESSING, default_dice, default_dice, default_avd, default_avd,
                                    table, len(cases))
    setting = LesionPostprocessing(best["threshold"], best["min_component_ml"])
    return FittedPostprocessing(setting, default_dice, best["mean_dice"], default_avd, best["mean_avd_ml"], table,
                                len(cases))
