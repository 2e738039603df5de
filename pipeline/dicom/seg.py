"""A predicted lesion mask as a DICOM Segmentation object (highdicom) referencing the source series.

The mask lies on the grid of the reference series as the project's readers load it: an (x, y, z) array, x along a
row of a slice (DICOM columns), y down its columns (DICOM rows), z along the slice normal in SimpleITK's reading
order (:mod:`pipeline.io.readers`). Each source instance is placed on that grid by its own position and orientation,
so a frame of the Segmentation is the mask's slice at that instance, transposed to (rows, columns), whatever order
the files have on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

import pipeline
from pipeline.checks import binary_label
from pipeline.errors import CaseError
from pipeline.io.atomic import atomic_path
from pipeline.io.geometry import _LPS_TO_RAS, dicom_series_files, read_geometry

SOFTWARE_NAME = "isles-unet-pipeline"
SEGMENT_LABEL = "infarct"
# SNOMED CT 55641003 "Infarct" (morphologic abnormality), in the category "Morphologically abnormal structure"
INFARCT = hd.sr.CodedConcept("55641003", "SCT", "Infarct")
# Type 2 patient and study attributes that highdicom copies from the source: present, possibly empty, in a valid
# image, but dropped by some anonymisers.
_TYPE2_SOURCE_ATTRIBUTES = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                            "StudyDate", "StudyTime", "ReferringPhysicianName")
# How far (in voxels) a source slice's corner may lie from the grid point it is taken for.
POSITION_TOLERANCE_VOXELS = 1e-2
DIRECTION_TOLERANCE = 1e-3


def read_source_header(path: str | Path, case_id: str | None) -> Dataset:
    """A source instance's header (no pixels), with missing type 2 patient and study attributes set empty, as
    highdicom needs them to derive an object in the source's study.

    Raises:
        CaseError: the header cannot be read (names the file).
    """
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for a damaged file; name the file
        raise CaseError(case_id, str(path), f"cannot read the source DICOM header ({str(err).strip()})") from err
    for keyword in _TYPE2_SOURCE_ATTRIBUTES:
        if keyword not in dataset:
            setattr(dataset, keyword, "")
    return dataset


def _read_sources(files: Sequence[str | Path], case_id: str | None) -> list[Dataset]:
    """The source instances' headers (:func:`read_source_header`).

    Raises:
        CaseError: a header cannot be read, or the files belong to several series.
    """
    datasets = [read_source_header(path, case_id) for path in files]
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) != 1:
        raise CaseError(case_id, files[0], f"the source files belong to {len(uids)} series "
                        f"({', '.join(sorted(uids))}); give the files of the one reference series")
    return datasets


def _slice_indices(datasets: list[Dataset], affine_ras: np.ndarray, shape: tuple[int, ...], case_id: str | None,
                   files: Sequence[str | Path]) -> list[int]:
    """The z index of each source instance on the grid ``affine_ras`` (RAS, as the readers give it).

    Raises:
        CaseError: an instance's rows, columns or corner do not lie on the grid (the files are not the series the grid
            was read from), or two instances take one slice.
    """
    affine_lps = _LPS_TO_RAS @ affine_ras  # the flip is its own inverse
    to_voxel = np.linalg.inv(affine_lps)
    x_axis, y_axis = affine_lps[:3, 0], affine_lps[:3, 1]
    indices = []
    for dataset, path in zip(datasets, files):
        cosines = np.asarray([float(v) for v in dataset.ImageOrientationPatient])
        row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
        voxel = to_voxel @ np.append(np.asarray([float(v) for v in dataset.ImagePositionPatient]), 1.0)
        k = int(round(voxel[2]))
        on_grid = (
            np.allclose(cosines[:3] * column_spacing, x_axis, atol=DIRECTION_TOLERANCE * column_spacing)
            and np.allclose(cosines[3:] * row_spacing, y_axis, atol=DIRECTION_TOLERANCE * row_spacing)
            and np.allclose(voxel[:3], [0.0, 0.0, k], atol=POSITION_TOLERANCE_VOXELS)
            and 0 <= k < shape[2] and (int(dataset.Columns), int(dataset.Rows)) == tuple(shape[:2])
        )
        if not on_grid:
            raise CaseError(case_id, path, "the source instance does not lie on the reference grid the mask was "
                            "predicted on (its orientation, spacing, size or position differs); give the files of "
                            "the reference series")
        indices.append(k)
    if sorted(indices) != list(range(shape[2])):
        raise CaseError(case_id, files[0], f"the {len(files)} source instances do not take the {shape[2]} slices of "
                        "the reference grid one each; give all the files of the reference series")
    return indices


def write_segmentation(
    mask: np.ndarray,
    reference_series_files: Sequence[str | Path],
    out_path: str | Path,
    *,
    model_name: str,
    model_version: str,
    case_id: str | None = None,
    series_number: int = 300,
    series_description: str = "Infarct core (AI)",
) -> Path:
    """Write a binary lesion mask on the reference series' grid as a DICOM Segmentation, atomically.

    One segment, ``infarct`` (category SCT 49755003 "Morphologically abnormal structure", type SCT 55641003
    "Infarct", anatomic region SCT 12738006 "Brain", algorithm type AUTOMATIC, identified as ``model_name``
    ``model_version`` of this pipeline). Frames are given to highdicom in the order of the source instances along the
    slice normal, each referencing its source instance; empty frames are left out (all are kept for an empty mask).
    The object takes the patient and study of the source series and a new series of its own.

    Args:
        mask: the lesion, 0/1 or bool, of the reference grid's shape in the readers' (x, y, z) order
            (:func:`pipeline.io.read_array` of the series).
        reference_series_files: every file of the reference (NCCT) series
            (:func:`pipeline.dicom.series.reference_series_files` for a datalist record).
        out_path: the ``.dcm`` file to write; its folder is created when missing.
        model_name: the model (the bundle's name), for the algorithm identification and the manufacturer model name.
        model_version: the model's version (such as its checkpoint's SHA-256), for the algorithm identification.
        case_id: named in errors.
        series_number, series_description: of the new Segmentation series.

    Returns:
        ``out_path``.

    Raises:
        CaseError: no files, a source header cannot be read, the files are not one whole series, the mask is not
            binary or not of the series' grid shape, or an instance does not lie on the grid.
        OSError: the file cannot be written (nothing is left under ``out_path``).
    """
    if not reference_series_files:
        raise CaseError(case_id, None, "no reference series files given for the DICOM Segmentation")
    files = [str(f) for f in reference_series_files]
    try:
        series = dicom_series_files(files[0])
        geometry = read_geometry(files[0])
    except (ValueError, RuntimeError, OSError) as err:
        raise CaseError(case_id, files[0], f"cannot read the reference series ({err})") from err
    if sorted(map(str, series)) != sorted(files):
        raise CaseError(case_id, files[0], f"{len(files)} files given, but their series has {len(series)} in "
                        f"{Path(files[0]).parent}; give every file of the reference series")
    mask = binary_label(mask, case_id, files[0], what="mask")
    if mask.shape != geometry.spatial_shape:
        raise CaseError(case_id, files[0], f"the mask has shape {mask.shape}, the reference series' grid "
                        f"{geometry.spatial_shape}; give the mask on the reference grid")
    datasets = _read_sources(files, case_id)
    indices = _slice_indices(datasets, geometry.affine, mask.shape, case_id, files)
    order = np.argsort(indices)
    sources = [datasets[i] for i in order]
    frames = np.stack([mask[:, :, indices[i]].T for i in order])

    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, family=codes.DCM.ArtificialIntelligence, version=model_version, source=SOFTWARE_NAME,
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=INFARCT,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=hd.UID(),
        tracking_id=SEGMENT_LABEL,
        anatomic_regions=[codes.SCT.Brain],
    )
    segmentation = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SOFTWARE_NAME,
        manufacturer_model_name=model_name,
        software_versions=pipeline.__version__,
        device_serial_number=model_version,
        series_description=series_description,
        content_label="INFARCT",
        content_description="Predicted infarct",
        omit_empty_frames=bool(frames.any()),
    )
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        segmentation.save_as(tmp)
    return out_path
