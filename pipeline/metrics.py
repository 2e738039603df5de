"""Segmentation metrics of one case: the official ISLES ones plus surface distances.

Every function takes binary masks on one grid (any non-zero value is foreground) and, where a
physical size is involved, the voxel spacing in mm. The ISLES 2022 conventions are followed where
the challenge defines them (Dice and lesion-wise F1 are 1.0 when both masks are empty; volumes are
voxel count x voxel volume; lesions are 26-connected components). Surface distances come from
MONAI; they are undefined when either mask is empty (no surface to measure from), and are NaN then.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

# Column order of :func:`case_metrics`; the evaluation tables keep it.
METRIC_NAMES = (
    "dice",
    "hd95_mm",
    "assd_mm",
    "pred_volume_ml",
    "truth_volume_ml",
    "abs_volume_diff_ml",
    "lesion_f1",
    "lesion_count_diff",
    "pred_lesions",
    "truth_lesions",
    "lesion_tp",
    "lesion_fp",
    "lesion_fn",
    "precision",
    "recall",
)


def _binary_pair(pred, truth, name: str) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred) != 0
    truth = np.asarray(truth) != 0
    if pred.shape != truth.shape:
        raise ValueError(f"{name}: prediction shape {pred.shape} differs from truth shape {truth.shape}")
    return pred, truth


def _spacing(spacing: Sequence[float] | float | None, ndim: int, name: str) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        return (float(spacing),) * ndim
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim:
        raise ValueError(f"{name}: spacing {values} has {len(values)} entries for a {ndim}D mask")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"{name}: spacing {values} must be positive")
    return values


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two binary masks (ISLES 2022 convention: 1.0 when both are empty).

    Computed in float64 from voxel counts; the value equals MONAI's
    ``compute_dice(..., ignore_empty=False)`` (which works in float32) to rounding.

    Args:
        pred: predicted mask; any non-zero value is foreground.
        truth: reference mask of the same shape; any non-zero value is foreground.

    Returns:
        ``2 |pred & truth| / (|pred| + |truth|)``, in [0, 1].

    Raises:
        ValueError: the shapes differ.
    """
    pred, truth = _binary_pair(pred, truth, "dice_score")
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def _surface_metric(function, pred, truth, spacing, name: str, **kwargs) -> float:
    pred, truth = _binary_pair(pred, truth, name)
    spacing = _spacing(spacing, pred.ndim, name)
    if not pred.any() or not truth.any():
        return float("nan")
    y_pred = torch.from_numpy(np.ascontiguousarray(pred))[None, None].float()
    y = torch.from_numpy(np.ascontiguousarray(truth))[None, None].float()
    with warnings.catch_warnings():
        # MONAI deprecation notices about its own internal arguments; nothing the caller can act on.
        warnings.simplefilter("ignore", FutureWarning)
        value = function(y_pred, y, include_background=True, spacing=list(spacing), **kwargs)
    return float(value.reshape(-1)[0])


def hausdorff95_mm(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | float | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between the mask surfaces, in mm.

    MONAI's ``compute_hausdorff_distance(percentile=95, spacing=...)``: the larger of the two
    directed 95th percentiles of the distances from one mask's border voxels to the other's.

    Args:
        pred: predicted mask (2D or 3D); any non-zero value is foreground.
        truth: reference mask of the same shape.
        spacing: voxel size in mm per axis (a scalar for isotropic voxels; ``None`` for 1 mm).

    Returns:
        The distance in mm; NaN when either mask is empty (both empty included), since a distance
        to an empty surface is undefined. The evaluation summary leaves NaN out of the means and
        counts it.

    Raises:
        ValueError: the shapes differ, or ``spacing`` does not fit the mask.
    """
    from monai.metrics import compute_hausdorff_distance  # importing MONAI takes seconds: only when measured

    return _surface_metric(compute_hausdorff_distance, pred, truth, spacing, "hausdorff95_mm", percentile=95)


def average_surface_distance_mm(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | float | None = None
) -> float:
    """Average symmetric surface distance (ASSD) between the mask surfaces, in mm.

    MONAI's ``compute_average_surface_distance(symmetric=True, spacing=...)``: the mean of the
    distances from each mask's border voxels to the other mask's border, both directions pooled.

    Args:
        pred: predicted mask (2D or 3D); any non-zero value is foreground.
        truth: reference mask of the same shape.
        spacing: voxel size in mm per axis (a scalar for isotropic voxels; ``None`` for 1 mm).

    Returns:
        The distance in mm; NaN when either mask is empty (both empty included).

    Raises:
        ValueError: the shapes differ, or ``spacing`` does not fit the mask.
    """
    from monai.metrics import compute_average_surface_distance

    return _surface_metric(
        compute_average_surface_distance, pred, truth, spacing, "average_surface_distance_mm", symmetric=True
    )


def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in mL (1 mL = 1000 mm^3) from its spacing in mm."""
    return float(np.prod([float(s) for s in spacing])) / 1000.0


def volume_ml(mask: np.ndarray, spacing: Sequence[float] | float | None = None) -> float:
    """Volume of a binary mask in mL: foreground voxel count x voxel volume.

    Args:
        mask: the mask; any non-zero value is foreground.
        spacing: voxel size in mm per axis (a scalar for isotropic voxels; ``None`` for 1 mm).

    Returns:
        The volume in mL (0.0 for an empty mask).

    Raises:
        ValueError: ``spacing`` does not fit the mask.
    """
    mask = np.asarray(mask) != 0
    return int(mask.sum()) * voxel_volume_ml(_spacing(spacing, mask.ndim, "volume_ml"))


def absolute_volume_difference_ml(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | float | None = None
) -> float:
    """Absolute volume difference in mL (ISLES): ``| |pred| - |truth| | x voxel volume``.

    Args:
        pred: predicted mask; truth: reference mask of the same shape.
        spacing: voxel size in mm per axis.

    Returns:
        The difference in mL (0.0 when both are empty).

    Raises:
        ValueError: the shapes differ, or ``spacing`` does not fit the masks.
    """
    pred, truth = _binary_pair(pred, truth, "absolute_volume_difference_ml")
    return abs(volume_ml(pred, spacing) - volume_ml(truth, spacing))


def label_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the lesions of a mask: its connected components, with full (26- in 3D) connectivity.

    Args:
        mask: the mask; any non-zero value is foreground.

    Returns:
        ``(labels, count)``: an int array numbering the components 1..count (0 is background).
    """
    mask = np.asarray(mask) != 0
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    labels, count = ndimage.label(mask, structure=structure)
    return labels, int(count)


@dataclass(frozen=True)
class LesionCounts:
    """Lesion-wise detection counts between a prediction and a reference (ISLES 2022 definitions).

    Attributes:
        tp: reference lesions touched by at least one predicted voxel.
        fn: reference lesions no predicted voxel touches.
        fp: predicted lesions with no reference voxel.
        pred_lesions: number of predicted lesions.
        truth_lesions: number of reference lesions.
    """

    tp: int
    fp: int
    fn: int
    pred_lesions: int
    truth_lesions: int

    @property
    def f1(self) -> float:
        """Lesion-wise F1 ``tp / (tp + (fp + fn) / 2)``; 1.0 when both masks are empty."""
        if self.tp + self.fp + self.fn == 0:
            return 1.0
        return self.tp / (self.tp + (self.fp + self.fn) / 2.0)

    @property
    def count_difference(self) -> int:
        """Absolute lesion-count difference ``|pred_lesions - truth_lesions|``."""
        return abs(self.pred_lesions - self.truth_lesions)


def lesion_counts(pred: np.ndarray, truth: np.ndarray) -> LesionCounts:
    """Count detected, missed and spurious lesions (26-connected components in 3D).

    A reference lesion is a true positive when any predicted voxel lies in it, else a false
    negative; a predicted lesion is a false positive when none of its voxels is a reference voxel.
    A predicted lesion that touches two reference lesions makes both true positives.

    Args:
        pred: predicted mask; truth: reference mask of the same shape.

    Returns:
        The :class:`LesionCounts`.

    Raises:
        ValueError: the shapes differ.
    """
    pred, truth = _binary_pair(pred, truth, "lesion_counts")
    truth_labels, n_truth = label_lesions(truth)
    pred_labels, n_pred = label_lesions(pred)
    touched = np.unique(truth_labels[pred & truth])
    tp = int(np.count_nonzero(touched))
    overlapping_pred = np.unique(pred_labels[pred & truth])
    fp = n_pred - int(np.count_nonzero(overlapping_pred))
    return LesionCounts(tp=tp, fp=fp, fn=n_truth - tp, pred_lesions=n_pred, truth_lesions=n_truth)


def lesion_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    """Lesion-wise F1 (ISLES 2022): ``TP / (TP + (FP + FN) / 2)``, 1.0 when both masks are empty.

    See :func:`lesion_counts` for TP, FP and FN. Raises ``ValueError`` when the shapes differ.
    """
    return lesion_counts(pred, truth).f1


def lesion_count_difference(pred: np.ndarray, truth: np.ndarray) -> int:
    """Absolute difference of the lesion counts (26-connected components) of two masks.

    Raises ``ValueError`` when the shapes differ.
    """
    return lesion_counts(pred, truth).count_difference


def precision_recall(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Voxel-wise precision ``|pred & truth| / |pred|`` and recall ``|pred & truth| / |truth|``.

    Args:
        pred: predicted mask; truth: reference mask of the same shape.

    Returns:
        ``(precision, recall)``. Both are 1.0 when both masks are empty; otherwise a ratio whose
        denominator is zero (precision of an empty prediction, recall against an empty reference)
        is NaN.

    Raises:
        ValueError: the shapes differ.
    """
    pred, truth = _binary_pair(pred, truth, "precision_recall")
    n_pred, n_truth = int(pred.sum()), int(truth.sum())
    if n_pred == 0 and n_truth == 0:
        return 1.0, 1.0
    overlap = int(np.logical_and(pred, truth).sum())
    precision = overlap / n_pred if n_pred else float("nan")
    recall = overlap / n_truth if n_truth else float("nan")
    return precision, recall


def case_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | float | None = None,
                 counts: LesionCounts | None = None) -> dict[str, float]:
    """Every metric of one case, keyed and ordered as :data:`METRIC_NAMES`.

    Args:
        pred: predicted mask; truth: reference mask of the same shape (any non-zero is foreground).
        spacing: voxel size in mm per axis (``None`` for 1 mm).
        counts: the lesion-wise counts, when another convention made them
            (:mod:`pipeline.evaluation.lesion_matching`); default :func:`lesion_counts`.

    Returns:
        ``dice``, ``hd95_mm``, ``assd_mm`` (NaN when either mask is empty), ``pred_volume_ml``,
        ``truth_volume_ml``, ``abs_volume_diff_ml``, ``lesion_f1``, ``lesion_count_diff``,
        ``pred_lesions``, ``truth_lesions``, ``lesion_tp``, ``lesion_fp``, ``lesion_fn``,
        ``precision``, ``recall``.

    Raises:
        ValueError: the shapes differ, or ``spacing`` does not fit the masks.
    """
    pred, truth = _binary_pair(pred, truth, "case_metrics")
    spacing = _spacing(spacing, pred.ndim, "case_metrics")
    counts = lesion_counts(pred, truth) if counts is None else counts
    precision, recall = precision_recall(pred, truth)
    pred_ml, truth_ml = volume_ml(pred, spacing), volume_ml(truth, spacing)
    values = {
        "dice": dice_score(pred, truth),
        "hd95_mm": hausdorff95_mm(pred, truth, spacing),
        "assd_mm": average_surface_distance_mm(pred, truth, spacing),
        "pred_volume_ml": pred_ml,
        "truth_volume_ml": truth_ml,
        "abs_volume_diff_ml": abs(pred_ml - truth_ml),
        "lesion_f1": counts.f1,
        "lesion_count_diff": counts.count_difference,
        "pred_lesions": counts.pred_lesions,
        "truth_lesions": counts.truth_lesions,
        "lesion_tp": counts.tp,
        "lesion_fp": counts.fp,
        "lesion_fn": counts.fn,
        "precision": precision,
        "recall": recall,
    }
    return {name: values[name] for name in METRIC_NAMES}
