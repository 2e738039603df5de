"""Segmentation metrics."""

from __future__ import annotations

import numpy as np


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two binary masks (ISLES 2022 convention: 1.0 when both are empty).

    Args:
        pred: predicted mask; any non-zero value is foreground.
        truth: reference mask of the same shape; any non-zero value is foreground.

    Returns:
        ``2 |pred & truth| / (|pred| + |truth|)``, in [0, 1].

    Raises:
        ValueError: the shapes differ.
    """
    pred = np.asarray(pred) != 0
    truth = np.asarray(truth) != 0
    if pred.shape != truth.shape:
        raise ValueError(f"dice_score: prediction shape {pred.shape} differs from truth shape {truth.shape}")
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total
