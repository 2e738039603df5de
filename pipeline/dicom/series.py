"""The image series of a DICOM folder, read from headers only, and the reference series of a datalist record.

Every DICOM Part 10 file under a folder (at any depth, with any suffix or none) is read by pydicom up to its pixels;
files that are not DICOM, and DICOM objects that are not images (a DICOMDIR, reports, segmentations), are passed over.
The images are grouped by SeriesInstanceUID, and each series is sorted along its slice normal (the cross product of
the row and column directions of ImageOrientationPatient), the order in which SimpleITK reads it
(:func:`pipeline.io.geometry.dicom_series_files`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from pipeline.errors import CaseError
from pipeline.io.geometry import dicom_series_files, is_dicom_file

# What the grouping, the choice by description and the stack checks read of each file.
HEADER_TAGS = [
    "SeriesInstanceUID", "SeriesDescription", "StudyInstanceUID", "FrameOfReferenceUID",
    "PatientID", "Modality", "Rows", "Columns", "SamplesPerPixel", "NumberOfFrames", "ImageOrientationPatient",
    "ImagePositionPatient", "PixelSpacing",
]
# Two slices closer than this along the normal (mm) lie at one position.
SAME_POSITION_MM = 1e-3
# Largest difference between the direction cosines of two slices of one stack.
ORIENTATION_TOLERANCE = 1e-4


@dataclass
class DicomSeries:
    """One image series of a folder, described from its files' headers.

    Attributes:
        series_instance_uid: the SeriesInstanceUID its files share.
        description: its SeriesDescription (``""`` when absent).
        files: its files, sorted along the slice normal when it is a stack of parallel slices, else by name.
        patient_id, study_instance_uid, frame_of_reference_uid, modality: from its first file (``None`` when absent).
        problem: why the series cannot be read as one 3D volume (colour images, multi-frame files, slices of several
            orientations or sizes, two slices at one position, no position tags, files in several folders); ``None``
            when it can.
    """

    series_instance_uid: str
    description: str
    files: list[Path]
    patient_id: str | None = None
    study_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    modality: str | None = None
    problem: str | None = None

    @property
    def folder(self) -> Path:
        """The folder of its first file."""
        return self.files[0].parent

    def describe(self) -> str:
        """The series for messages: its description, its UID and where its files are."""
        return (f"{self.description!r} (SeriesInstanceUID {self.series_instance_uid}, {len(self.files)} file(s) in "
                f"{self.folder})")


def slice_normal(orientation) -> np.ndarray:
    """The unit normal of slices with ImageOrientationPatient ``orientation`` (row direction x column direction).

    Args:
        orientation: the six direction cosines of ImageOrientationPatient.

    Returns:
        The normal, in the patient coordinates (LPS) of DICOM.
    """
    cosines = np.asarray([float(v) for v in orientation], dtype=np.float64)
    normal = np.cross(cosines[:3], cosines[3:])
    return normal / np.linalg.norm(normal)


def _text(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    return None if value is None or str(value) == "" else str(value)


def _files_under(folder: Path, case_id: str | None) -> list[Path]:
    """The files under ``folder`` at any depth, hidden ones left out, in a stable order.

    Raises:
        CaseError: a folder cannot be listed.
    """
    def fail(err: OSError) -> None:
        raise CaseError(case_id, err.filename or folder, f"cannot list the folder ({err.strerror or err})") from err

    found = []
    for parent, folders, names in os.walk(folder, onerror=fail):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        found += [Path(parent, n) for n in sorted(names) if not n.startswith(".")]
    return found


def _is_image(dataset: Dataset) -> bool:
    # a DICOMDIR, a report or a presentation state has no Rows; a Segmentation has, and is no source image
    return "Rows" in dataset and dataset.get("Modality") != "SEG"


def _stack(items: list[tuple[Path, Dataset]]) -> tuple[list[Path], str | None]:
    """The files of one series sorted along the slice normal, and why they are no 3D stack (``None`` when they are)."""
    by_name = [path for path, _ in sorted(items, key=lambda item: str(item[0]))]
    datasets = [ds for _, ds in items]
    folders = sorted({str(path.parent) for path, _ in items})
    if len(folders) > 1:
        return by_name, f"its files lie in {len(folders)} folders ({', '.join(folders)}); put a series in one folder"
    if any(int(ds.get("SamplesPerPixel", 1) or 1) != 1 for ds in datasets):
        return by_name, ("it holds colour images (SamplesPerPixel 3), such as a screenshot of a coloured map, not the "
                         "map's values; export the quantitative (greyscale) map")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        return by_name, "it holds multi-frame (enhanced) images; export the series as single-frame images"
    if any(ds.get(k) is None for ds in datasets for k in ("ImageOrientationPatient", "ImagePositionPatient",
                                                          "PixelSpacing")):
        return by_name, "a slice has no ImageOrientationPatient, ImagePositionPatient or PixelSpacing"
    orientations = np.asarray([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        return by_name, "its slices have several orientations (ImageOrientationPatient)"
    if len({(int(ds.Rows), int(ds.Columns)) for ds in datasets}) > 1:
        return by_name, "its slices have several sizes (Rows, Columns)"
    normal = slice_normal(orientations[0])
    positions = [float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for ds in datasets]
    order = np.argsort(positions, kind="stable")
    if len(order) > 1 and np.diff(np.asarray(positions)[order]).min() < SAME_POSITION_MM:
        return by_name, ("two of its slices lie at one position (a time series, or copies of one file); keep one "
                         "image per position")
    return [items[i][0] for i in order], None


def read_folder_series(folder: str | Path, case_id: str | None = None) -> list[DicomSeries]:
    """The image series of every DICOM file under ``folder``, from the headers.

    Args:
        folder: a folder holding DICOM files at any depth (one folder per series, or series mixed in one folder).
        case_id: named in errors.

    Returns:
        One :class:`DicomSeries` per SeriesInstanceUID, ordered by folder and description.

    Raises:
        CaseError: a folder cannot be listed, a DICOM file's header cannot be read, or an image has no
            SeriesInstanceUID; the message names the file.
    """
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for path in _files_under(Path(folder), case_id):
        if not is_dicom_file(path):
            continue
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
        except Exception as err:  # noqa: BLE001 - pydicom raises many types for a damaged file; name the file
            raise CaseError(case_id, path, f"cannot read the DICOM header ({str(err).strip() or type(err).__name__}); "
                            "remove or replace the damaged file") from err
        if not _is_image(dataset):
            continue
        uid = _text(dataset, "SeriesInstanceUID")
        if uid is None:
            raise CaseError(case_id, path, "the DICOM image has no SeriesInstanceUID, so its series is unknown")
        groups.setdefault(uid, []).append((path, dataset))
    series = []
    for uid, items in groups.items():
        files, problem = _stack(items)
        first = items[0][1]
        series.append(DicomSeries(
            series_instance_uid=uid,
            description=_text(first, "SeriesDescription") or "",
            files=files,
            patient_id=_text(first, "PatientID"),
            study_instance_uid=_text(first, "StudyInstanceUID"),
            frame_of_reference_uid=_text(first, "FrameOfReferenceUID"),
            modality=_text(first, "Modality"),
            problem=problem,
        ))
    return sorted(series, key=lambda s: (str(s.folder), s.description, s.series_instance_uid))


def reference_series_files(record: Mapping) -> list[str]:
    """The files of the reference series of a datalist record that the ``dicom`` layout made: the grid its
    prediction lies on, which :func:`pipeline.dicom.seg.write_segmentation` references.

    Args:
        record: a datalist record as :func:`pipeline.data.datalist.load_datalist` returns it (paths absolute): its
            ``reference`` is one file of the series, its ``extra.dicom`` what ``prepare`` recorded of the series.

    Returns:
        The series' files, in SimpleITK's reading order.

    Raises:
        CaseError: the record has no reference, the reference is not a readable DICOM series, or the series found
            now is not the one ``prepare`` recorded (another SeriesInstanceUID or number of files).
    """
    case_id = record.get("case_id")
    reference = record.get("reference")
    if not reference:
        raise CaseError(case_id, None, "the record has no 'reference' series; write the datalist again with prepare")
    try:
        files = dicom_series_files(reference)
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
                  .get("SeriesInstanceUID", ""))
    except Exception as err:  # noqa: BLE001 - SimpleITK, pydicom and the file system raise many types; name the file
        raise CaseError(case_id, reference, f"cannot read the reference DICOM series ({str(err).strip()})") from err
    dicom = ((record.get("extra") or {}).get("dicom") or {})
    recorded = (dicom.get("series") or {}).get(dicom.get("reference"), {})
    expected_uid, expected_count = recorded.get("series_instance_uid"), recorded.get("instances")
    if (expected_uid is not None and expected_uid != uid) or (expected_count is not None
                                                               and expected_count != len(files)):
        raise CaseError(
            case_id, reference,
            f"the reference series is now {uid} with {len(files)} file(s), but prepare recorded {expected_uid} with "
            f"{expected_count}: the folder changed since; run prepare again",
        )
    return files
