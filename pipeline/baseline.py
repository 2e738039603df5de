"""The clinical CT-perfusion threshold rule: the baseline a model must beat."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def threshold_rule(
    cbf: np.ndarray,
    tmax: np.ndarray,
    rcbf_threshold: float = 0.30,
    tmax_threshold_s: float = 6.0,
    brain_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Ischemic core by the clinical rule: relative CBF below 30% and Tmax above 6 s.

    Relative CBF is CBF divided by the mean CBF of the brain tissue with Tmax <= ``tmax_threshold_s``
    (the normally perfused tissue), so CBF may be in any units.

    Args:
        cbf: cerebral blood flow map, any units.
        tmax: Tmax map in seconds, same shape as ``cbf``.
        rcbf_threshold: relative CBF below which tissue is core.
        tmax_threshold_s: Tmax (s) above which tissue is hypoperfused.
        brain_mask: brain voxels (non-zero); default ``cbf > 0``.

    Returns:
        uint8 0/1 core mask of the maps' shape (core voxels lie inside the brain mask).

    Raises:
        ValueError: the shapes of ``cbf``, ``tmax`` and ``brain_mask`` differ, or the brain holds no
            tissue with Tmax <= ``tmax_threshold_s`` and positive CBF to normalise by.
    """
    cbf = np.asarray(cbf, dtype=np.float64)
    tmax = np.asarray(tmax, dtype=np.float64)
    if cbf.shape != tmax.shape:
        raise ValueError(f"threshold_rule: CBF shape {cbf.shape} differs from Tmax shape {tmax.shape}")
    if brain_mask is None:
        brain = cbf > 0
    else:
        brain = np.asarray(brain_mask) != 0
        if brain.shape != cbf.shape:
            raise ValueError(f"threshold_rule: brain mask shape {brain.shape} differs from CBF shape {cbf.shape}")
    normal = brain & (tmax <= tmax_threshold_s)
    reference = float(cbf[normal].mean()) if normal.any() else 0.0
    if not reference > 0:
        raise ValueError(
            "threshold_rule: no brain tissue with Tmax <= "
            f"{tmax_threshold_s} s and positive CBF to normalise CBF by (empty or all-hypoperfused maps?)"
        )
    core = brain & (cbf < rcbf_threshold * reference) & (tmax > tmax_threshold_s)
    return core.astype(np.uint8)


def threshold_rule_case(cbf_path: str | Path, tmax_path: str | Path, **kwargs) -> np.ndarray:
    """Apply :func:`threshold_rule` to a CBF and a Tmax NIfTI file.

    Args:
        cbf_path: CBF image file (``.nii`` / ``.nii.gz``).
        tmax_path: Tmax image file on the same grid.
        **kwargs: passed on to :func:`threshold_rule` (thresholds, ``brain_mask``).

    Returns:
        uint8 0/1 core mask with the images' shape.

    Raises:
        ValueError: the two images differ in shape (the message names both files), or as
            :func:`threshold_rule`.
        FileNotFoundError: a file is missing.
    """
    cbf = np.asanyarray(nib.load(str(cbf_path)).dataobj)
    tmax = np.asanyarray(nib.load(str(tmax_path)).dataobj)
    if cbf.shape != tmax.shape:
        raise ValueError(f"threshold_rule_case: {cbf_path} has shape {cbf.shape} but {tmax_path} has shape {tmax.shape}")
    return threshold_rule(cbf, tmax, **kwargs)
