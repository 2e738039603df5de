"""A volume written as a DICOM CT image series (one file per slice), as a scanner or perfusion software exports it.

The inverse of the project's readers: a volume in their (x, y, z) order with its RAS affine becomes slices whose
pixel (row r, column c) of slice k is voxel (c, r, k), placed by ImagePositionPatient and ImageOrientationPatient
(LPS). Values are stored as 16-bit integers with a rescale slope and intercept chosen per series. What ``serve``
writes for its warm-up study, and what tests and benchmarks send through a PACS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pipeline.io.atomic import atomic_path

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_INT16_MAX = 32000


def _rescale(values: np.ndarray, hounsfield: bool) -> tuple[float, float]:
    """Slope and intercept that store ``values`` in int16: HU as integers from -1024, maps at the finest step."""
    if hounsfield:
        return 1.0, -1024.0
    top = float(np.max(np.abs(values))) if values.size else 0.0
    return (top / _INT16_MAX if top > 0 else 1.0), 0.0


def write_ct_series(
    folder: str | Path,
    volume_xyz: np.ndarray,
    affine_ras: np.ndarray,
    description: str,
    *,
    study: Mapping[str, str],
    frame_of_reference_uid: str,
    series_number: int = 1,
    hounsfield: bool = False,
) -> list[Path]:
    """Write ``volume_xyz`` as one CT Image Storage series, one file per slice, each written atomically.

    Args:
        folder: where the files go (created); named ``IM<k>.dcm`` in slice order.
        volume_xyz: the values in real-world units (HU, mL/100g/min, s ...), in the readers' (x, y, z) order.
        affine_ras: the volume's 4x4 voxel-to-RAS affine (columns: the x, y and z steps).
        description: SeriesDescription (what the ``dicom`` layout chooses channels by).
        study: ``StudyInstanceUID``, ``PatientID``, and optionally ``PatientName``, ``StudyDate``, ``AccessionNumber``.
        frame_of_reference_uid: shared by the series of one acquisition (the maps are placed on the NCCT by it).
        series_number: SeriesNumber.
        hounsfield: the values are HU (stored from -1024 in steps of 1), else a map (stored at its finest step).

    Returns:
        The files, in slice order.

    Raises:
        ValueError: the volume is not 3D or the affine not 4x4.
        OSError: a file cannot be written (no partial file is left).
    """
    volume = np.asarray(volume_xyz, dtype=np.float64)
    affine = np.asarray(affine_ras, dtype=np.float64)
    if volume.ndim != 3 or affine.shape != (4, 4):
        raise ValueError(f"a 3D volume and a 4x4 affine are needed, got {volume.shape} and {affine.shape}")
    steps = _RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(steps, axis=0)
    row_direction, column_direction = steps[:, 0] / spacing[0], steps[:, 1] / spacing[1]
    slope, intercept = _rescale(volume, hounsfield)
    series_uid = generate_uid()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(volume.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName = study["PatientID"], study.get("PatientName", "")
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyInstanceUID, ds.StudyID = study["StudyInstanceUID"], "1"
        ds.StudyDate, ds.StudyTime = study.get("StudyDate", "20240101"), "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName = study.get("AccessionNumber", ""), ""
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber = series_uid, description, series_number
        ds.FrameOfReferenceUID, ds.Modality, ds.InstanceNumber = frame_of_reference_uid, "CT", k + 1
        ds.ImageOrientationPatient = [float(v) for v in (*row_direction, *column_direction)]
        ds.ImagePositionPatient = [float(v) for v in _RAS_TO_LPS @ (affine[:3, :3] @ [0.0, 0.0, k] + affine[:3, 3])]
        ds.PixelSpacing, ds.SliceThickness = [float(spacing[1]), float(spacing[0])], float(spacing[2])
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:g}"
        stored = np.clip(np.round((volume[:, :, k].T - intercept) / slope), -32768, 32767).astype(np.int16)
        ds.PixelData = stored.tobytes()
        path = folder / f"IM{k}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        files.append(path)
    return files


def write_ct_study(
    folder: str | Path,
    volumes: Mapping[str, np.ndarray],
    affine_ras: np.ndarray,
    descriptions: Mapping[str, str],
    *,
    study: Mapping[str, str],
    hounsfield: Sequence[str] = ("NCCT",),
) -> dict[str, list[Path]]:
    """Write several volumes on one grid as the series of one study, one folder per series (``<folder>/<name>/``).

    Args:
        folder: the study's folder.
        volumes: the volumes by channel name (``NCCT``, ``CBF`` ...), each in (x, y, z) order on ``affine_ras``.
        affine_ras: their shared voxel-to-RAS affine.
        descriptions: each channel's SeriesDescription.
        study: the study's identifiers (see :func:`write_ct_series`).
        hounsfield: the channels whose values are HU.

    Returns:
        The files of each series by channel name.
    """
    frame = generate_uid()
    return {name: write_ct_series(Path(folder) / name, volume, affine_ras, descriptions[name], study=study,
                                  frame_of_reference_uid=frame, series_number=i + 1, hounsfield=name in hounsfield)
            for i, (name, volume) in enumerate(volumes.items())}
