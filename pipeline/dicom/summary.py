"""The per-patient clinical summary of a prediction: core, Tmax > 6 s and mismatch volumes (JSON) and a one-page
figure of the key slices.

Volumes are voxel counts times the voxel volume of the reference grid (:func:`pipeline.metrics.volume_ml`), as the
evaluation's clinical table computes them: the core is the predicted lesion, the hypoperfused tissue the voxels whose
Tmax exceeds the threshold, the mismatch volume the hypoperfused volume minus the core volume, the mismatch ratio the
hypoperfused volume divided by the core volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.lines import Line2D

from pipeline.checks import binary_label
from pipeline.errors import CaseError
from pipeline.io.atomic import atomic_write_json
from pipeline.io.geometry import is_dicom_series, read_dicom_series
from pipeline.metrics import volume_ml
from pipeline.report.figures import _save, plt

TMAX_THRESHOLD_S = 6.0
NCCT_WINDOW_HU = (0.0, 80.0)
CORE_COLOUR = "#ff3df5"
HYPOPERFUSION_COLOUR = "#ffd000"


@dataclass(frozen=True)
class ClinicalSummary:
    """The clinical volumes of one patient.

    Attributes:
        case_id: the case.
        core_ml: the predicted core (lesion) volume in mL.
        hypoperfusion_ml: the volume with Tmax above ``tmax_threshold_s``, in mL.
        mismatch_ml: ``hypoperfusion_ml - core_ml`` (negative when the core is the larger).
        mismatch_ratio: ``hypoperfusion_ml / core_ml``; ``None`` when the core is empty (the ratio is undefined, and
            JSON has no infinity).
        tmax_threshold_s: the Tmax threshold in seconds.
        spacing_mm: the voxel size of the grid the volumes were counted on.
    """

    case_id: str
    core_ml: float
    hypoperfusion_ml: float
    mismatch_ml: float
    mismatch_ratio: float | None
    tmax_threshold_s: float
    spacing_mm: tuple[float, float, float]


def clinical_summary(case_id: str, core: np.ndarray, tmax_s: np.ndarray, spacing: Sequence[float],
                     tmax_threshold_s: float = TMAX_THRESHOLD_S) -> ClinicalSummary:
    """Compute the clinical volumes of a predicted core and a Tmax map on one grid.

    Args:
        case_id: the case, named in errors and in the summary.
        core: the predicted lesion, 0/1 or bool.
        tmax_s: the Tmax map in seconds, on the core's grid (non-finite values count as not hypoperfused).
        spacing: the grid's voxel size in mm, one per axis.
        tmax_threshold_s: hypoperfused means Tmax above this.

    Returns:
        The :class:`ClinicalSummary`.

    Raises:
        CaseError: the core is not 0/1, the Tmax map has another shape, or ``spacing`` does not fit the grid.
    """
    core = binary_label(core, case_id, None, what="predicted core")
    tmax_s = np.asarray(tmax_s, dtype=np.float64)
    if tmax_s.shape != core.shape:
        raise CaseError(case_id, None, f"the Tmax map has shape {tmax_s.shape}, the core {core.shape}; give the Tmax "
                        "map on the core's grid")
    if len(spacing) != core.ndim:
        raise CaseError(case_id, None, f"{len(spacing)} spacings for a {core.ndim}D grid")
    hypoperfused = np.nan_to_num(tmax_s, nan=0.0, posinf=0.0, neginf=0.0) > tmax_threshold_s
    core_ml = volume_ml(core, spacing)
    hypoperfusion_ml = volume_ml(hypoperfused, spacing)
    return ClinicalSummary(
        case_id=str(case_id),
        core_ml=core_ml,
        hypoperfusion_ml=hypoperfusion_ml,
        mismatch_ml=hypoperfusion_ml - core_ml,
        mismatch_ratio=hypoperfusion_ml / core_ml if core_ml > 0 else None,
        tmax_threshold_s=float(tmax_threshold_s),
        spacing_mm=tuple(float(s) for s in spacing),
    )


def write_summary_json(summary: ClinicalSummary, out_path: str | Path) -> Path:
    """Write the summary as a JSON object, atomically.

    Args:
        summary: the volumes (:func:`clinical_summary`).
        out_path: the ``.json`` file.

    Returns:
        ``out_path``; the object has the fields of :class:`ClinicalSummary`, ``mismatch_ratio`` ``null`` when the
        core is empty.

    Raises:
        OSError: the file cannot be written (nothing is left under ``out_path``).
    """
    return atomic_write_json(out_path, asdict(summary))


def read_on_grid(path: str | Path, reference_path: str | Path) -> np.ndarray:
    """Read an image resampled (linearly, by position) onto the grid of another, such as a Tmax series onto the NCCT's.

    Both are read with SimpleITK: a DICOM series (a folder, or one of its files), or an MHA/NRRD file. Positions
    outside the image take 0.

    Args:
        path: the image to resample.
        reference_path: the image whose grid is wanted.

    Returns:
        The resampled values as float64, in the readers' (x, y, z) order.

    Raises:
        CaseError: either image cannot be read; the message names the file.
    """
    def read(image_path: str | Path) -> sitk.Image:
        try:
            return read_dicom_series(image_path) if is_dicom_series(image_path) else sitk.ReadImage(str(image_path))
        except (ValueError, RuntimeError, OSError) as err:
            raise CaseError(None, image_path, f"cannot read the image ({str(err).strip()})") from err

    resampled = sitk.Resample(read(path), read(reference_path), sitk.Transform(), sitk.sitkLinear, 0.0,
                              sitk.sitkFloat64)
    return np.transpose(sitk.GetArrayFromImage(resampled), (2, 1, 0))


def key_slices(core: np.ndarray, hypoperfused: np.ndarray | None = None, count: int = 3) -> list[int]:
    """The slices (last axis) that hold the most lesion, in slice order.

    Args:
        core: the lesion mask.
        hypoperfused: taken instead when the core is empty (optional).
        count: at most this many slices.

    Returns:
        The slices with the most core voxels (the most hypoperfused ones when the core is empty), at most ``count``,
        only slices that hold some; the middle slice when both masks are empty.
    """
    for mask in (core, hypoperfused):
        if mask is None:
            continue
        per_slice = (np.asarray(mask) != 0).reshape(-1, mask.shape[-1]).sum(axis=0)
        if per_slice.any():
            ranked = np.argsort(-per_slice, kind="stable")[:count]
            return sorted(int(z) for z in ranked if per_slice[z] > 0)
    return [core.shape[-1] // 2]


def write_summary_figure(summary: ClinicalSummary, ncct_hu: np.ndarray, core: np.ndarray, tmax_s: np.ndarray,
                         out_png: str | Path, count: int = 3) -> Path:
    """Draw the one-page summary: the key slices, NCCT with the core outlined, and Tmax with Tmax > threshold shaded.

    One row per key slice (:func:`key_slices`): the NCCT in a brain window with the predicted core's outline, and the
    Tmax map with the hypoperfused region outlined and the core's outline; the volumes in the title. Slices are shown
    as the scanner shows them (DICOM rows downwards, columns to the right): arrays in the readers' (x, y, z) order.

    Args:
        summary: the volumes (:func:`clinical_summary`), for the title and the threshold.
        ncct_hu: the NCCT in HU, on the core's grid.
        core: the predicted lesion.
        tmax_s: the Tmax map in seconds, on the core's grid.
        out_png: the PNG to write (atomically).
        count: at most this many key slices.

    Returns:
        ``out_png``.

    Raises:
        CaseError: the three arrays do not share one shape.
        OSError: the file cannot be written (nothing is left under ``out_png``).
    """
    core = np.asarray(core) != 0
    ncct_hu, tmax_s = np.asarray(ncct_hu, dtype=np.float64), np.nan_to_num(np.asarray(tmax_s, dtype=np.float64))
    if not ncct_hu.shape == core.shape == tmax_s.shape:
        raise CaseError(summary.case_id, None, f"NCCT {ncct_hu.shape}, core {core.shape} and Tmax {tmax_s.shape} "
                        "must share one grid")
    hypoperfused = tmax_s > summary.tmax_threshold_s
    slices = key_slices(core, hypoperfused, count)
    aspect = summary.spacing_mm[1] / summary.spacing_mm[0]
    tmax_top = max(float(np.percentile(tmax_s[tmax_s > 0], 99)) if (tmax_s > 0).any() else 0.0,
                   2 * summary.tmax_threshold_s)
    fig, axes = plt.subplots(len(slices), 2, figsize=(8.0, 3.8 * len(slices) + 0.8), squeeze=False)
    for row, z in zip(axes, slices):
        for ax, image, window, cmap, title in (
            (row[0], ncct_hu, NCCT_WINDOW_HU, "gray", "NCCT"),
            (row[1], tmax_s, (0.0, tmax_top), "viridis", "Tmax (s)"),
        ):
            shown = ax.imshow(image[:, :, z].T, cmap=cmap, vmin=window[0], vmax=window[1], aspect=aspect,
                              interpolation="nearest")
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
            outlines = [(core, CORE_COLOUR)] + ([(hypoperfused, HYPOPERFUSION_COLOUR)] if ax is row[1] else [])
            for mask, colour in outlines:
                if mask[:, :, z].any():
                    ax.contour(mask[:, :, z].T.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
            ax.set_title(f"{title}, slice {z + 1} of {core.shape[-1]}")
            ax.set_xticks([])
            ax.set_yticks([])
    ratio = "undefined (no core)" if summary.mismatch_ratio is None else f"{summary.mismatch_ratio:.2f}"
    threshold = f"{summary.tmax_threshold_s:g}"
    fig.suptitle(f"{summary.case_id}: core {summary.core_ml:.1f} mL, Tmax > {threshold} s "
                 f"{summary.hypoperfusion_ml:.1f} mL, mismatch {summary.mismatch_ml:.1f} mL, ratio {ratio}")
    fig.legend(handles=[Line2D([0], [0], color=CORE_COLOUR, lw=2, label="predicted core"),
                        Line2D([0], [0], color=HYPOPERFUSION_COLOUR, lw=2, label=f"Tmax > {threshold} s")],
               loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    return _save(fig, Path(out_png))
