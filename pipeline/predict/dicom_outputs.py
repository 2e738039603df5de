"""The hospital outputs of DICOM cases (``predict --format dicom-seg``): after the bundle has written each case's
NIfTI mask, the DICOM Segmentation referencing the source series and the clinical summary (JSON and a one-page PNG)
are added beside it. This is a step of ``predict``, not of the bundle, so an exported bundle needs no DICOM package.

A case whose DICOM outputs cannot be written becomes a failed case of the run (in the manifest and ``failures.csv``),
its files removed; the other cases go on.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from pipeline.errors import CaseError
from pipeline.formats import dicom_output_names
from pipeline.io import atomic_write_text
from pipeline.manifest import (
    FAILED, FAILURES_NAME, MANIFEST_NAME, WRITTEN, failures_csv, file_sha256, read_manifest, write_manifest,
)
from pipeline.paths import path_in

# AlgorithmVersion and ManufacturerModelName are LO: 64 characters
_LO_LENGTH = 64


def model_version(checkpoints: Sequence[str | Path]) -> str:
    """The model's version for the Segmentation: the first 16 hex digits of each checkpoint's SHA-256, joined by
    ``+`` (an ensemble), at most 64 characters; ``unknown`` without a readable checkpoint."""
    digests = [digest[:16] for digest in map(file_sha256, checkpoints) if digest]
    return "+".join(digests)[:_LO_LENGTH] or "unknown"


def model_name(bundle: str | Path) -> str:
    """The bundle's name from its ``configs/metadata.json`` (else the folder's name), at most 64 characters."""
    bundle = Path(bundle)
    try:
        name = json.loads((bundle / "configs" / "metadata.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    return str(name or bundle.name)[:_LO_LENGTH]


def write_case_dicom_outputs(record: Mapping, mask_path: str | Path, output_dir: str | Path, name: str, version: str,
                             tmax_threshold_s: float = 6.0) -> list[Path]:
    """Write one DICOM case's Segmentation and clinical summary (JSON, PNG and the PNG as a DICOM Secondary Capture)
    beside its mask.

    Args:
        record: the case's datalist record from the ``dicom`` layout (``case_id``, ``reference``: one file of the
            NCCT series, ``modalities`` with ``Tmax``, ``extra.dicom``: what ``prepare`` recorded of the series).
        mask_path: the mask the bundle wrote on the reference series' grid.
        output_dir: where the files go (see :func:`pipeline.formats.dicom_output_names`).
        name, version: the algorithm identification of the Segmentation (:func:`model_name`, :func:`model_version`).
        tmax_threshold_s: hypoperfused means Tmax above this.

    Returns:
        The written files: the Segmentation, the summary JSON, the PNG and its Secondary Capture.

    Raises:
        CaseError: the reference series changed since ``prepare`` or does not lie on the mask's grid, the case has no
            Tmax series, or a file cannot be read.
    """
    from pipeline.dicom.capture import write_summary_capture
    from pipeline.dicom.seg import write_segmentation
    from pipeline.dicom.series import reference_series_files
    from pipeline.dicom.summary import clinical_summary, read_on_grid, write_summary_figure, write_summary_json
    from pipeline.io import read_array, read_geometry

    case_id = str(record.get("case_id"))
    names = dicom_output_names(case_id)
    reference = str(record.get("reference") or "")
    mask = read_array(mask_path)
    files = reference_series_files(record)
    written = [write_segmentation(mask, files, path_in(output_dir, names["segmentation"], case_id, "output name"),
                                  model_name=name, model_version=version, case_id=case_id)]
    tmax_path = (record.get("modalities") or {}).get("Tmax")
    if not tmax_path:
        raise CaseError(case_id, reference, "the clinical summary needs the case's Tmax series, and the record has none")
    tmax = read_on_grid(tmax_path, reference)
    summary = clinical_summary(case_id, mask, tmax, read_geometry(reference).spacing, tmax_threshold_s)
    written.append(write_summary_json(summary, path_in(output_dir, names["summary"], case_id, "output name")))
    figure = write_summary_figure(summary, read_array(reference), mask, tmax,
                                  path_in(output_dir, names["figure"], case_id, "output name"))
    written.append(figure)
    written.append(write_summary_capture(figure, files[0], path_in(output_dir, names["capture"], case_id, "output name"),
                                         model_name=name, case_id=case_id))
    return written


def _with_writing_time(entry, seconds: float):
    """The entry with the DICOM outputs' seconds added to its post-processing and writing stage."""
    try:
        return replace(entry, postprocess_s=f"{float(entry.postprocess_s) + seconds:.3f}")
    except ValueError:  # no stage time recorded (an entry of a distributed run's other rank)
        return entry


def add_dicom_outputs(run_dir: str | Path, records: Sequence[Mapping], checkpoints: Sequence[str | Path],
                      bundle: str | Path) -> list[str]:
    """Add the DICOM outputs of every case a finished run wrote (its ``manifest.csv``), in ``run_dir``.

    Args:
        run_dir: the run's folder (``predict``'s staging folder): its manifest and masks.
        records: the datalist records the run predicted.
        checkpoints: the weights (the Segmentation's algorithm version is their SHA-256).
        bundle: the bundle (the algorithm's name).

    Returns:
        One message per case that failed here (naming the case and the file); those cases are marked failed in the
        manifest and ``failures.csv``, and their files removed. The seconds spent on each written case's DICOM
        outputs are added to its post-processing and writing stage in the manifest.
    """
    run_dir = Path(run_dir)
    entries = read_manifest(run_dir)
    if entries is None:
        return []
    by_id = {str(r.get("case_id")): r for r in records}
    name, version = model_name(bundle), model_version(checkpoints)
    updated, failures = [], []
    for entry in entries:
        if entry.status != WRITTEN:
            updated.append(entry)
            continue
        mask = run_dir / entry.file
        started = time.perf_counter()
        try:
            record = by_id.get(entry.case_id)
            if record is None:
                raise CaseError(entry.case_id, str(mask), "no record of this case in the run's datalist")
            write_case_dicom_outputs(record, mask, run_dir, name, version)
        except Exception as err:  # noqa: BLE001 - highdicom, pydicom and SimpleITK raise many types; one case fails
            error = err if isinstance(err, CaseError) else CaseError(
                entry.case_id, str(mask), f"cannot write the DICOM outputs ({type(err).__name__}: {err})")
            for path in [mask, *(run_dir / n for n in dicom_output_names(entry.case_id).values())]:
                path.unlink(missing_ok=True)
            updated.append(replace(entry, file="", status=FAILED, error=str(error)))
            failures.append(str(error))
            continue
        updated.append(_with_writing_time(entry, time.perf_counter() - started))
    write_manifest(run_dir / MANIFEST_NAME, updated)
    if failures:
        table = run_dir / FAILURES_NAME
        rows = list(csv.DictReader(io.StringIO(table.read_text()))) if table.is_file() else []
        rows += [{"case_id": e.case_id, "error": e.error} for e in updated if e.status == FAILED
                 and not any(r.get("case_id") == e.case_id for r in rows)]
        atomic_write_text(table, failures_csv(rows))
    return failures
