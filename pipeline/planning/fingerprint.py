"""Dataset fingerprint: per-case geometry, intensities and lesion volume, and a dataset summary.

The fingerprint is the first phase's output (as in nnU-Net): the plans are derived from it.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from scipy import ndimage

from pipeline.checks import binary_label, constant_channel_note
from pipeline.data.profiles import DatasetProfile
from pipeline.data.records import CaseRecord
from pipeline.errors import CaseError
from pipeline.io.atomic import atomic_write_json, atomic_write_text
from pipeline.io.dtypes import check_image_dtype
from pipeline.io.geometry import check_case_geometry, is_nifti
from pipeline.io.readers import read_array

PERCENTILES = (0.5, 5.0, 50.0, 95.0, 99.5)
# What reading one file's voxels may raise on a damaged file (truncated, corrupt gzip stream, bad header).
_READ_ERRORS = (OSError, ValueError, EOFError, RuntimeError, zlib.error, HeaderDataError, ImageFileError)


def _read_array(path: str, case_id: str | None = None, what: str = "the file") -> tuple[np.ndarray, str]:
    """Read a file's voxels after checking its data type; returns ``(array, stored data type)``.

    Raises:
        CaseError: an unsupported data type (bool, complex...) or a file that cannot be read, naming the file.
    """
    dtype = check_image_dtype(path, case_id)
    try:
        data = read_array(path)
    except _READ_ERRORS as err:
        raise CaseError(case_id, path, f"cannot read {what}: {str(err).strip() or type(err).__name__}") from err
    return data, dtype if is_nifti(path) else str(data.dtype)


def case_fingerprint(
    record: CaseRecord, profile: DatasetProfile, strict: bool = False, notes: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Fingerprint one case: shape, spacing, slab, per-channel intensity percentiles, lesion volume.

    Intensities are taken inside the brain, the voxels where any channel normalized with a
    ``nonzero`` mask is nonzero (the maps are 0 outside the brain); all voxels when there is none.
    Every file the datalist will name (channels, reference, label) must store integers or floats
    (:func:`pipeline.io.check_image_dtype`); the label must hold only 0 and 1 after the profile's
    ``label_values`` (:func:`pipeline.checks.binary_label`). A channel that is empty or constant
    (:func:`pipeline.checks.constant_channel_note`) is a warning, listed in the row's
    ``constant_channels`` and in ``notes``, or, with ``strict``, an error.

    Args:
        record: the case; its modalities must include every profile channel.
        profile: channels, reference modality, resampling rules, label values.
        strict: refuse a case with an empty or constant channel instead of noting it.
        notes: when a list is given, one ``{"case_id", "split", "channel", "file", "note"}`` per empty or
            constant channel of the case is appended to it (only when the case succeeds).

    Returns:
        A flat dictionary (one row of the fingerprint table).

    Raises:
        CaseError, GeometryError: unreadable files, an unsupported data type, 4D channels, files off the
            reference grid, a label whose values are not 0/1, an empty or constant channel with ``strict``.
    """
    channel_paths = [(name, record.modalities[name]) for name in profile.channels]
    reference_path = record.modalities.get(profile.reference_modality or "", channel_paths[0][1])
    # The data type first: nibabel cannot even read the header of some (bool), and silently casts others.
    named = [p for _, p in channel_paths] + [reference_path] + ([record.label] if record.label else [])
    for path in dict.fromkeys(named):
        check_image_dtype(path, record.case_id)
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
    case_notes: list[dict[str, Any]] = []
    for name, path in channel_paths:
        arrays[name], row[f"{name}_dtype"] = _read_array(path, record.case_id, name)
        note = constant_channel_note(arrays[name], record.case_id, path, name)
        if note is not None:
            if strict:
                raise CaseError(record.case_id, path, note.split(": ", 1)[1] + " (refused: strict checks are on)")
            case_notes.append({"case_id": record.case_id, "split": record.split, "channel": name, "file": path,
                               "note": note})
    row["constant_channels"] = ",".join(n["channel"] for n in case_notes)
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
        label = binary_label(
            _read_array(record.label, record.case_id, "the label")[0], record.case_id, record.label,
            profile.label_values,
        ).astype(bool)
        row["lesion_ml"] = float(label.sum() * voxel_ml)
        # full connectivity (26 neighbours in 3D), the ISLES convention for counting lesions
        row["lesion_count"] = int(ndimage.label(label, structure=np.ones((3,) * label.ndim, bool))[1])
    else:
        row["lesion_ml"] = float("nan")
        row["lesion_count"] = np.nan
    if notes is not None:
        notes.extend(case_notes)
    return row


def compute_fingerprint(
    records: Sequence[CaseRecord],
    profile: DatasetProfile,
    strict: bool = False,
    notes: list[dict[str, Any]] | None = None,
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Fingerprint every case; a case that fails is reported, not fatal.

    Args:
        records: the cases (complete: see :func:`pipeline.data.datalist.select_channels`).
        profile: channels, reference modality, label values.
        strict: a case with an empty or constant channel fails instead of being noted.
        notes: when a list is given, the empty or constant channels of the cases that succeed are appended
            to it (see :func:`case_fingerprint`).

    Returns:
        ``(table, failures)``: one row per good case (with ``slabs_of_patient``), and one
        ``{case_id, split, error, file, reason}`` per case that could not be read or checked (``error`` is
        the whole message, ``file`` the file at fault or ``None``, ``reason`` what is wrong with it).
    """
    rows, failures = [], []
    for record in records:
        try:
            rows.append(case_fingerprint(record, profile, strict=strict, notes=notes))
        except CaseError as err:
            failures.append({"case_id": record.case_id, "split": record.split, "error": str(err),
                             "file": err.path, "reason": err.message})
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
        "constant_channel_cases": (
            int((table["constant_channels"].fillna("") != "").sum()) if "constant_channels" in table else 0
        ),
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
    if summary.get("constant_channel_cases"):
        lines.append(
            f"  {summary['constant_channel_cases']} case(s) with an empty or constant channel, kept (the network sees "
            "nothing there); each is named in the warnings"
        )
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
