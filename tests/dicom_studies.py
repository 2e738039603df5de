"""Small real DICOM studies for the tests: CT Image Storage series written with pydicom, one file per slice, and a
patient as a hospital exports it (NCCT, the perfusion maps, RAPID's thresholded Tmax mask, a DICOMDIR)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SHAPE_ZYX = (4, 32, 32)  # slices, rows, columns
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
FRAME_UID = "1.2.826.0.1.3680043.8.498.2"


def rotation(degrees_xyz) -> np.ndarray:
    """A rotation matrix from angles about x, y and z (degrees): its columns are the row direction, the column
    direction and the slice normal of an oblique acquisition."""
    rx, ry, rz = (math.radians(a) for a in degrees_xyz)
    x = np.array([[1, 0, 0], [0, math.cos(rx), -math.sin(rx)], [0, math.sin(rx), math.cos(rx)]])
    y = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    z = np.array([[math.cos(rz), -math.sin(rz), 0], [math.sin(rz), math.cos(rz), 0], [0, 0, 1]])
    return z @ y @ x


AXIAL = np.eye(3)
# rows run right-to-left and columns feet-to-head... a flipped and tilted acquisition
OBLIQUE_FLIPPED = rotation((12, -8, 20)) @ np.diag([-1.0, -1.0, 1.0])


def write_series(folder: Path, values_zyx: np.ndarray, description: str, *, directions: np.ndarray = AXIAL,
                 spacing=(0.8, 0.9), thickness=5.0, origin=(-20.0, -30.0, 40.0), slope=1.0, intercept=-1024.0,
                 prefix="IM", suffix="", descending=False, patient_id="P001", frame=FRAME_UID,
                 study_uid=STUDY_UID) -> list[Path]:
    """Write ``values_zyx`` (slices, rows, columns, in real-world units) as a CT series, one file per slice.

    Slice k lies at ``origin + k * thickness * normal`` (``- normal`` when ``descending``), with the row direction
    ``directions[:, 0]`` and the column direction ``directions[:, 1]``; ``spacing`` is PixelSpacing (between rows,
    between columns). Files are named ``<prefix><k><suffix>`` in reverse order when ``descending``. Returns the files
    in slice order k.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    row_dir, col_dir = directions[:, 0], directions[:, 1]
    normal = np.cross(row_dir, col_dir) * (-1.0 if descending else 1.0)
    files = []
    count = values_zyx.shape[0]
    for k in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient_id, "Test^Patient", "19500101", "O"
        ds.StudyInstanceUID, ds.StudyID, ds.StudyDate, ds.StudyTime = study_uid, "1", "20240101", "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName = "A1", ""
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber = series_uid, description, 1
        ds.FrameOfReferenceUID, ds.Modality, ds.InstanceNumber = frame, "CT", k + 1
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + k * thickness * normal]
        ds.PixelSpacing, ds.SliceThickness = list(spacing), thickness
        ds.Rows, ds.Columns = values_zyx.shape[1], values_zyx.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = np.round((values_zyx[k] - intercept) / slope).astype(np.int16)
        ds.PixelData = stored.tobytes()
        path = folder / f"{prefix}{count - 1 - k if descending else k}{suffix}"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def write_dicomdir(path: Path) -> None:
    """A Media Storage Directory object (what a DICOMDIR is): DICOM, but no image."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.FileSetID = "EXPORT"
    ds.save_as(path, enforce_file_format=True)


def ct_values(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 80, SHAPE_ZYX).astype(np.float64)


def tmax_values(seed=1) -> np.ndarray:
    return np.round(np.random.default_rng(seed).uniform(0, 12, SHAPE_ZYX), 1)


PERFUSION = {"CBF": "RAPID CBF", "CBV": "CBV", "MTT": "MTT", "Tmax": "Tmax"}


def write_patient(folder: Path, *, mixed: bool, directions=AXIAL, descending=False, skip=(), extra=(),
                  patient_id="P001", study_uid=STUDY_UID, frame=FRAME_UID) -> dict[str, list[Path]]:
    """A patient as a hospital exports it: NCCT, CBF, CBV, MTT, Tmax and RAPID's thresholded ``Tmax>6s`` mask, all
    in one folder without suffixes (``mixed``) or one folder per series (``.dcm``, below a study folder); plus a
    DICOMDIR and a text file. ``extra`` adds ``(name, description)`` series. Returns the files per series name."""
    series = {"NCCT": "Head 5mm NCCT", **PERFUSION, "mask": "TMAX >6s", **dict(extra)}
    written = {}
    for i, (name, description) in enumerate(series.items()):
        if name in skip:
            continue
        where = folder if mixed else folder / "study" / f"series{i}"
        values = ct_values(i) if name == "NCCT" else tmax_values(i)
        slope, intercept = (1.0, -1024.0) if name == "NCCT" else (0.1, 0.0)
        written[name] = write_series(where, values, description, directions=directions, descending=descending,
                                     prefix=f"S{i}_", suffix="" if mixed else ".dcm", slope=slope, intercept=intercept,
                                     patient_id=patient_id, study_uid=study_uid, frame=frame)
    write_dicomdir(folder / "DICOMDIR")
    (folder / "notes.txt").write_text("exported from PACS\n")
    return written


def uid_of(path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
