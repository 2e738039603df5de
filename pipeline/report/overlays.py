"""Per-case overlay pictures: each channel map on the most-lesioned slice, with the truth, prediction and
threshold-rule contours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from pipeline.baseline import threshold_rule
from pipeline.evaluation import EvaluationCase, read_volume
from pipeline.report.figures import _save, plt

# Maps shown per case, in order; other modalities are drawn only when none of these exists.
PERFUSION_MAPS = ("CBF", "CBV", "MTT", "Tmax")
SKIPPED_MODALITIES = ("4DPWI",)
TRUTH_COLOUR = "#00e05a"
PREDICTION_COLOUR = "#ff3df5"
THRESHOLD_COLOUR = "#ffd000"


def lesion_slice(truth: np.ndarray, pred: np.ndarray | None = None) -> int:
    """The axial slice (last axis) with the most truth voxels; else the most predicted; else the middle."""
    for mask in (truth, pred):
        if mask is not None and mask.any():
            return int(np.argmax(mask.reshape(-1, mask.shape[-1]).sum(axis=0)))
    return truth.shape[-1] // 2


def _crop_box(planes: list[np.ndarray], margin: int = 6) -> tuple[slice, slice]:
    """The bounding box of the non-zero voxels of 2D planes (the head), with a margin."""
    shape = planes[0].shape
    occupied = np.zeros(shape, dtype=bool)
    for plane in planes:
        occupied |= plane != 0
    if not occupied.any():
        return slice(None), slice(None)
    box = []
    for axis in range(2):
        hits = np.flatnonzero(occupied.any(axis=1 - axis))
        box.append(slice(max(0, int(hits[0]) - margin), min(shape[axis], int(hits[-1]) + margin + 1)))
    return box[0], box[1]


def _overlay_maps(case: EvaluationCase, shape: tuple[int, ...]) -> list[tuple[str, np.ndarray | None]]:
    names = [m for m in PERFUSION_MAPS if case.modality(m)]
    if not names:
        names = [m for m in case.modalities if m not in SKIPPED_MODALITIES]
    maps: list[tuple[str, np.ndarray | None]] = []
    for name in names:
        try:
            data, _ = read_volume(case.modality(name))
        except (FileNotFoundError, ValueError):
            continue
        if data.shape == shape:
            maps.append((name, np.nan_to_num(np.asarray(data, dtype=np.float64))))
    return maps or [("no image maps known", None)]


def plot_case_overlay(
    case: EvaluationCase,
    prediction: str | Path,
    out_png: str | Path,
    threshold: bool = False,
    title: str | None = None,
) -> Path:
    """Draw each channel map of a case on its most-lesioned slice with prediction and truth contours.

    One panel per map (CBF, CBV, MTT, Tmax when the case's modalities have them; otherwise its other
    3D modalities on the mask grid; a blank panel when none is known), grey-scaled between the 1st
    and 99th percentiles of the slice's non-zero values, with a colour bar, the truth contour in
    green, the prediction in magenta and, with ``threshold``, the threshold rule's core in dashed
    yellow; a legend below.

    Args:
        case: the case (its ``label`` and ``modalities`` are read).
        prediction: the predicted mask on the truth's grid.
        out_png: the PNG to write (atomically).
        threshold: also draw the threshold rule's core (needs the CBF and Tmax maps).
        title: the start of the figure title (the slice is appended); default the case name.

    Returns:
        ``out_png``.

    Raises:
        FileNotFoundError, ValueError: the mask files cannot be read, or differ in shape.
    """
    truth, geometry = read_volume(case.label)
    pred, _ = read_volume(prediction)
    truth, pred = truth != 0, pred != 0
    if truth.shape != pred.shape:
        raise ValueError(f"{prediction}: shape {pred.shape} differs from the truth {case.label} {truth.shape}")
    if truth.ndim == 2:
        truth, pred = truth[..., None], pred[..., None]
    z = lesion_slice(truth, pred)
    maps = _overlay_maps(case, truth.shape)
    core = None
    if threshold:
        by_name = dict(maps)
        cbf = by_name.get("CBF")
        tmax = by_name.get("Tmax")
        if cbf is not None and tmax is not None:
            try:
                core = threshold_rule(cbf, tmax) != 0
            except ValueError:
                core = None
    spacing = geometry.spacing
    aspect = float(spacing[1] / spacing[0]) if len(spacing) > 1 and spacing[0] > 0 else 1.0
    crop = _crop_box([m[:, :, z] for _, m in maps if m is not None] + [truth[:, :, z], pred[:, :, z]])
    fig, axes = plt.subplots(1, len(maps), figsize=(3.6 * len(maps), 4.2), squeeze=False)
    for ax, (name, data) in zip(axes[0], maps):
        if data is None:
            ax.imshow(np.zeros(truth.shape[:2])[crop].T, cmap="gray", origin="lower", aspect=aspect, vmin=0, vmax=1)
        else:
            plane = data[:, :, z][crop]
            inside = plane[plane != 0]
            low, high = (np.percentile(inside, [1, 99]) if inside.size else (0.0, 1.0))
            if not high > low:
                low, high = low - 1.0, high + 1.0
            shown = ax.imshow(plane.T, cmap="gray", origin="lower", aspect=aspect, vmin=low, vmax=high)
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        for mask, colour, style in ((truth, TRUTH_COLOUR, "solid"), (pred, PREDICTION_COLOUR, "solid"),
                                    (core, THRESHOLD_COLOUR, "dashed")):
            if mask is not None and mask[:, :, z][crop].any():
                ax.contour(mask[:, :, z][crop].T.astype(float), levels=[0.5], colors=[colour], linewidths=1.4,
                           linestyles=style)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Line2D([0], [0], color=TRUTH_COLOUR, lw=2, label="ground truth"),
        Line2D([0], [0], color=PREDICTION_COLOUR, lw=2, label="prediction"),
    ]
    if core is not None:
        handles.append(Line2D([0], [0], color=THRESHOLD_COLOUR, lw=2, ls="--", label="threshold rule"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.02))
    where = f"slice {z + 1} of {truth.shape[-1]}"
    fig.suptitle(f"{title}, {where}" if title else f"{case.key}: {where}")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return _save(fig, Path(out_png))
