"""Dataset fingerprint: per-case geometry, intensities and lesion volume, and a dataset summary.

The fingerprint is the first phase's output (as in nnU-Net): the plans are derived from it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from pipeline.data.profiles import DatasetProfile
from pipeline.data.records import CaseRecord
from pipeline.errors import CaseError
from pipeline.io import atomic_write_json, atomic_write_text, is_nifti, read_array
from pipeline.transforms import check_case_geometry

PERCENTILES = (0.5, 5.0, 50.0, 95.0, 99.5)


def _read_array(path: str) -> tuple[np.ndarray, str]:
    data = read_array(path)
    return data, str(nib.load(path).get_data_dtype() if is_nifti(path) else data.dtype)


def case_fingerprint(record: CaseRecord, profile: DatasetProfile) -> dict[str, Any]:
    """Fingerprint one case: shape, spacing, slab, per-channel intensity percentiles, lesion volume.

    Intensities are taken inside the brain, the voxels where any channel normalized with a
    ``nonzero`` mask is nonzero (the maps are 0 outside the brain); all voxels when there is none.

    Args:
        record: the case; its modalities must include every profile channel.
        profile: channels, reference modality, resampling rules.

    Returns:
        A flat dictionary (one row of the fingerprint table).

    Raises:
        CaseError, GeometryError: unreadable files, 4D channels, files off the reference grid.
    """
    channel_paths = [(name, record.modalities[name]) for name in profile.channels]
    reference_path = record.modalities.get(profile.reference_modality or "", channel_paths[0][1])
    reference = check_case_geometry(
        record.case_id,
        channel_paths,
        label_path=record.label,
        reference_path=reference_path,
        resample_to_reference=profile.resample_to_reference,
        tolerance_mm=profile.geometry_tolerance_mm,
    )
    spacing = tuple(float(s) for s in reference.spacing)
    voxel_ml = float(np.prod(spacing[:3])) / 1000.0
    row: dict[str, Any] = {
        "case_id": record.case_id,
        "split": record.split,
        "patient_id": record.patient_id or record.case_id,
        "slab_id": record.slab_id,
        "smir_id": record.smir_id,
        "shape_x": reference.spatial_shape[0],
        "shape_y": reference.spatial_shape[1],
        "shape_z": reference.spatial_shape[2] if len(reference.spatial_shape) > 2 else 1,
        "spacing_x": spacing[0],
        "spacing_y": spacing[1],
        "spacing_z": spacing[2] if len(spacing) > 2 else 1.0,
        "header_quirk": reference.spacing_note is not None,
    }
    arrays: dict[str, np.ndarray] = {}
    for name, path in channel_paths:
        try:
            arrays[name], row[f"{name}_dtype"] = _read_array(path)
        except (OSError, ValueError, EOFError) as err:
            raise CaseError(record.case_id, path, f"cannot read {name}: {err}") from err
    on_reference_grid = [n for n in arrays if n not in profile.resample_to_reference]
    masked = [
        n for n in on_reference_grid if profile.normalization(n).get("mask", "nonzero") == "nonzero"
        and profile.normalization(n).get("method") in ("percentile", "zscore")
    ]
    brain = np.zeros(arrays[on_reference_grid[0]].shape[:3], bool) if masked else None
    for name in masked:
        brain |= np.nan_to_num(arrays[name].astype(np.float64)) != 0
    row["brain_ml"] = float(brain.sum() * voxel_ml) if brain is not None else float("nan")
    for name, data in arrays.items():
        values = data.astype(np.float64)
        row[f"{name}_nonfinite"] = int((~np.isfinite(values)).sum())
        inside = values[brain] if brain is not None and name not in profile.resample_to_reference else values
        inside = inside[np.isfinite(inside)]
        quantiles = np.percentile(inside, PERCENTILES) if inside.size else [np.nan] * len(PERCENTILES)
        for p, q in zip(PERCENTILES, quantiles):
            row[f"{name}_p{p:g}"] = float(q)
    if record.label:
        label = read_array(record.label) > 0
        row["lesion_ml"] = float(label.sum() * voxel_ml)
        # full connectivity (26 neighbours in 3D), the ISLES convention for counting lesions
        row["lesion_count"] = int(ndimage.label(label, structure=np.ones((3,) * label.ndim, bool))[1])
    else:
        row["lesion_ml"] = float("nan")
        row["lesion_count"] = np.nan
    return row


def compute_fingerprint(
    records: Sequence[CaseRecord], profile: DatasetProfile
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Fingerprint every case; a case that fails is reported, not fatal.

    Returns:
        ``(table, failures)``: one row per good case (with ``slabs_of_patient``), and one
        ``{case_id, split, error}`` per case that could not be read or checked.
    """
    rows, failures = [], []
    for record in records:
        try:
            rows.append(case_fingerprint(record, profile))
        except CaseError as err:
            failures.append({"case_id": record.case_id, "split": record.split, "error": str(err)})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["slabs_of_patient"] = table.groupby(["split", "patient_id"])["case_id"].transform("count")
    return table, failures


def summarize_fingerprint(table: pd.DataFrame, profile: DatasetProfile) -> dict[str, Any]:
    """Dataset-level summary of a fingerprint table (what plans are derived from).

    Returns:
        A JSON-serialisable dictionary: case counts, shapes, slab histogram, spacing statistics,
        lesion volume statistics and per-channel median intensity percentiles.
    """
    if table.empty:
        return {"cases": 0}
    training = table[table["split"] == "training"]
    slabs = Counter(
        f"{int(z)}x{t:g}mm" for z, t in zip(table["shape_z"], table["spacing_z"].round(2))
    )
    lesion = training["lesion_ml"].dropna()
    summary: dict[str, Any] = {
        "profile": profile.name,
        "channels": list(profile.channels),
        "cases": int(len(table)),
        "training_cases": int(len(training)),
        "testing_cases": int((table["split"] == "testing").sum()),
        "patients": int(table.loc[table["split"] == "training", "patient_id"].nunique()),
        "in_plane_shapes": {f"{x}x{y}": int(n) for (x, y), n in table.groupby(["shape_x", "shape_y"]).size().items()},
        "slabs": dict(slabs.most_common()),
        "two_slice_fraction": float((table["shape_z"] <= 2).mean()),
        "spacing_median_mm": [float(table[f"spacing_{a}"].median()) for a in "xyz"],
        "spacing_min_mm": [float(table[f"spacing_{a}"].min()) for a in "xyz"],
        "spacing_max_mm": [float(table[f"spacing_{a}"].max()) for a in "xyz"],
        "header_quirk_cases": int(table["header_quirk"].sum()),
        "lesion_ml": {
            "median": float(lesion.median()) if len(lesion) else None,
            "q25": float(lesion.quantile(0.25)) if len(lesion) else None,
            "q75": float(lesion.quantile(0.75)) if len(lesion) else None,
            "min": float(lesion.min()) if len(lesion) else None,
            "max": float(lesion.max()) if len(lesion) else None,
            "empty_cases": int((lesion == 0).sum()),
        },
        "intensity_percentiles": {
            name: {f"p{p:g}": float(table[f"{name}_p{p:g}"].median()) for p in PERCENTILES}
            for name in profile.channels
        },
    }
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable rendering of :func:`summarize_fingerprint`'s output."""
    if not summary.get("cases"):
        return "fingerprint: no cases"
    lesion = summary["lesion_ml"]
    lines = [
        f"fingerprint ({summary['profile']}): {summary['training_cases']} training cases from "
        f"{summary['patients']} patients, {summary['testing_cases']} test cases; channels {', '.join(summary['channels'])}",
        f"  in-plane: {', '.join(f'{k} ({v})' for k, v in summary['in_plane_shapes'].items())}; "
        f"spacing median {', '.join(f'{s:.2f}' for s in summary['spacing_median_mm'])} mm",
        f"  slabs (slices x thickness): {', '.join(f'{k} ({v})' for k, v in summary['slabs'].items())}; "
        f"{summary['two_slice_fraction']:.0%} have at most 2 slices",
    ]
    if lesion["median"] is not None:
        lines.append(
            f"  lesion volume: median {lesion['median']:.1f} mL (IQR {lesion['q25']:.1f}-{lesion['q75']:.1f}), "
            f"range {lesion['min']:.1f}-{lesion['max']:.1f} mL, {lesion['empty_cases']} empty"
        )
    for name, p in summary["intensity_percentiles"].items():
        lines.append(f"  {name}: median p0.5/p50/p99.5 inside the brain = {p['p0.5']:.4g} / {p['p50']:.4g} / {p['p99.5']:.4g}")
    if summary["header_quirk_cases"]:
        lines.append(f"  {summary['header_quirk_cases']} case(s) with the pixdim/affine header quirk (pixdim spacing used)")
    return "\n".join(lines)


def write_fingerprint(table: pd.DataFrame, summary: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``fingerprint.csv`` (per case) and ``fingerprint.json`` (summary and cases) atomically.

    Returns:
        The two paths.
    """
    out_dir = Path(out_dir)
    csv_path = atomic_write_text(out_dir / "fingerprint.csv", table.to_csv(index=False))
    cases = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    json_path = atomic_write_json(out_dir / "fingerprint.json", {"summary": summary, "cases": cases})
    return csv_path, json_path
