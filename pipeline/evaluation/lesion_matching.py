"""Lesion-wise detection by challenge convention: which predicted lesion counts as finding which true lesion.

- ``isles2022`` (the default): 26-connected components; a true lesion is found when any predicted voxel touches it,
  a predicted lesion is spurious when it touches no true voxel (:func:`pipeline.metrics.lesion_counts`).
- ``isles2024``: the challenge's own scoring (``utils/eval_utils.py`` of the public isles24 repository), done with
  the ``panoptica`` package it uses: connected components matched one to one when their IoU is at least 0.2
  (``NaiveThresholdMatching(matching_threshold=0.2)``); lesion F1 is panoptica's recognition quality
  ``tp / (tp + (fp + fn) / 2)``, 1.0 when both masks are empty (the challenge's ``empty_value``).
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import MissingExtraError
from pipeline.metrics import LesionCounts, lesion_counts

CONVENTIONS = ("isles2022", "isles2024")
ISLES2024_MATCH_IOU = 0.2
ISLES2024_EXTRA = 'pip install -e ".[isles2024]"'


def check_convention(convention: str) -> None:
    """Check that ``convention`` is known and its package installed.

    Raises:
        ValueError: an unknown convention.
        MissingExtraError: ``isles2024`` without the ``panoptica`` package; the message says what to install.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown metrics convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    if convention == "isles2024":
        from monai.utils import optional_import

        _, found = optional_import("panoptica")
        if not found:
            raise MissingExtraError(
                "--metrics isles2024 scores lesions with the panoptica package, as the challenge does, and it is not "
                f"installed: install the project's isles2024 extra with `{ISLES2024_EXTRA}` (in the project folder)"
            )


def isles2024_lesion_counts(pred: np.ndarray, truth: np.ndarray) -> LesionCounts:
    """Lesion counts of the ISLES 2024 challenge (see the module's docstring), computed by panoptica.

    Args:
        pred: predicted mask; truth: reference mask of the same shape (any non-zero is foreground).

    Returns:
        The :class:`pipeline.metrics.LesionCounts`: ``tp`` matched pairs, ``fp`` unmatched predicted lesions, ``fn``
        unmatched true lesions, and the lesion counts of each mask.

    Raises:
        ValueError: the shapes differ.
        MissingExtraError: panoptica is not installed.
    """
    check_convention("isles2024")
    from panoptica import (
        ConnectedComponentsInstanceApproximator, InputType, NaiveThresholdMatching, Panoptica_Evaluator,
        disable_citation_reminder,
    )

    pred, truth = np.asarray(pred) != 0, np.asarray(truth) != 0
    if pred.shape != truth.shape:
        raise ValueError(f"isles2024_lesion_counts: shapes differ, {pred.shape} and {truth.shape}")
    disable_citation_reminder()  # it prints a banner to stdout on every evaluation
    evaluator = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=NaiveThresholdMatching(matching_threshold=ISLES2024_MATCH_IOU),
    )
    result = evaluator.evaluate(pred.astype(np.uint8), truth.astype(np.uint8), verbose=False)["ungrouped"]
    return LesionCounts(tp=int(result.tp), fp=int(result.fp), fn=int(result.fn),
                        pred_lesions=int(result.n_pred_instances), truth_lesions=int(result.n_ref_instances))


def convention_lesion_counts(convention: str, pred: np.ndarray, truth: np.ndarray) -> LesionCounts:
    """The lesion counts of ``pred`` against ``truth`` under ``convention`` (:data:`CONVENTIONS`).

    Raises:
        ValueError: an unknown convention, or the shapes differ.
        MissingExtraError: ``isles2024`` without panoptica.
    """
    if convention == "isles2024":
        return isles2024_lesion_counts(pred, truth)
    check_convention(convention)
    return lesion_counts(pred, truth)
