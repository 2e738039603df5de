"""Header geometry of NIfTI, MHA/NRRD and DICOM files (with the NIfTI pixdim/sform quirk), and the checks that a
case's files share one grid. Everything here reads headers only, never voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from pipeline.errors import CaseError, GeometryError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".dcm")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES
# A DICOM Part 10 file starts with a 128-byte preamble and the marker b"DICM".
DICOM_PREAMBLE_BYTES = 128
SERIES_INSTANCE_UID_TAG = "0020|000e"
# ITK works in LPS, MONAI and NIfTI in RAS: flip the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Header geometry
# ---------------------------------------------------------------------------------------------
def is_nifti(path: str | Path) -> bool:
    """True when ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def format_mm(values) -> str:
    """Format a spacing or offset vector for messages: ``(0.9, 0.9, 5)``."""
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _spacing_of(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


@dataclass(frozen=True)
class Geometry:
    """The grid of one image file, read from its header only.

    Attributes:
        path: the file.
        shape: the full data shape (a 4D file has 4 entries).
        affine: 4x4 voxel-to-world (RAS) matrix used for the data; corrected when the header is
            inconsistent (see ``spacing_note``).
        spacing: spatial voxel size in mm that goes with ``affine``.
        header_affine: the affine as the header's sform/qform states it.
        spacing_note: ``None`` for a consistent header, else what disagreed and what is used.
    """

    path: str
    shape: tuple[int, ...]
    affine: np.ndarray
    spacing: tuple[float, ...]
    header_affine: np.ndarray
    spacing_note: str | None = None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The first three dimensions of ``shape``."""
        return tuple(self.shape[:3])


def resolve_nifti_affine(img: nib.Nifti1Image, filename: str | None = None) -> tuple[np.ndarray, str | None]:
    """Return the affine to use for a NIfTI image and a note when its header disagrees with itself.

    The ISLES quirk: ``pixdim`` holds the true spacing while ``sform_code`` is set with an identity
    ``srow``, so an affine-based reader sees 1 mm voxels. When the spacing implied by the affine
    and the header's ``pixdim`` disagree, ``pixdim`` is trusted (it is what the scanner export
    wrote and what viewers show): the qform is used when it carries that spacing, else the affine's
    direction columns are rescaled to ``pixdim``. The origin is kept.

    Args:
        img: a nibabel NIfTI image (only its header is read).
        filename: named in the note; defaults to the image's own file name.

    Returns:
        ``(affine, note)``: ``note`` is ``None`` when the header is consistent.
    """
    header = img.header
    affine = np.array(img.affine, dtype=np.float64, copy=True)
    zooms = np.asarray(header.get_zooms()[:3], dtype=np.float64)
    if zooms.size < 3 or not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        return affine, None
    affine_spacing = _spacing_of(affine)
    if np.allclose(affine_spacing, zooms, rtol=1e-3, atol=1e-3):
        return affine, None
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    qform = np.asarray(header.get_qform(), dtype=np.float64)
    if qform_code > 0 and np.allclose(_spacing_of(qform), zooms, rtol=1e-3, atol=1e-3):
        fixed, source = qform, "the qform"
    else:
        direction = affine[:3, :3] / np.where(affine_spacing > 0, affine_spacing, 1.0)
        fixed = affine.copy()
        fixed[:3, :3] = direction * zooms
        source = "the sform's directions rescaled to pixdim"
    name = filename or img.get_filename() or "<in memory>"
    note = (
        f"{name}: header pixdim spacing {format_mm(zooms)} mm disagrees with the affine "
        f"(sform_code={sform_code}, qform_code={qform_code}) which implies {format_mm(affine_spacing)} mm; "
        f"using the pixdim spacing {format_mm(zooms)} mm with {source}"
    )
    return fixed, note


def _sitk_affine(image: sitk.Image) -> np.ndarray:
    dim = image.GetDimension()
    spatial = min(dim, 3)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:spatial, :spatial]
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:spatial]
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)[:spatial]
    affine = np.eye(4)
    affine[:spatial, :spatial] = direction * spacing
    affine[:spatial, 3] = origin
    return _LPS_TO_RAS @ affine


def is_dicom_file(path: str | Path) -> bool:
    """True when ``path`` is a DICOM Part 10 file (the ``DICM`` marker after the 128-byte preamble), whatever its
    suffix; a folder, an unreadable or a shorter file is not."""
    try:
        with open(path, "rb") as f:
            return f.read(DICOM_PREAMBLE_BYTES + 4)[DICOM_PREAMBLE_BYTES:] == b"DICM"
    except OSError:  # a folder, a vanished or unreadable file
        return False


def _series_instance_uid(path: Path) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if not reader.HasMetaDataKey(SERIES_INSTANCE_UID_TAG):
        raise ValueError(f"{path}: the DICOM file has no SeriesInstanceUID")
    return reader.GetMetaData(SERIES_INSTANCE_UID_TAG).strip(" \0")


def dicom_series_files(path: str | Path) -> list[str]:
    """The files of one DICOM series, in SimpleITK's reading order (along the slice normal).

    A series is named by a folder that holds it alone, or by any one of its files when its folder holds several
    series: the files of that folder (not its subfolders) with the file's SeriesInstanceUID.

    Args:
        path: a folder holding one DICOM series, or one DICOM file of a series.

    Returns:
        The paths of the series' files.

    Raises:
        ValueError: the folder holds no DICOM series, or several (the message lists their UIDs), or the file has no
            SeriesInstanceUID.
        RuntimeError: SimpleITK cannot read the file's header.
    """
    path = Path(path)
    if path.is_dir():
        folder = path
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        if not uids:
            raise ValueError(f"{folder}: no DICOM series found in this folder")
        if len(uids) > 1:
            raise ValueError(f"{folder}: the folder holds {len(uids)} DICOM series ({', '.join(uids)}); name one "
                             "series by one of its files")
        uid = uids[0]
    else:
        folder, uid = path.parent, _series_instance_uid(path)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    if not files:
        raise ValueError(f"{path}: no DICOM series {uid} found in {folder}")
    return list(files)


# the name pipeline.io.dtypes imports
_dicom_series_files = dicom_series_files


def read_dicom_series(path: str | Path) -> sitk.Image:
    """Read the DICOM series that ``path`` names (see :func:`dicom_series_files`) with SimpleITK.

    Raises:
        ValueError: see :func:`dicom_series_files`.
        RuntimeError: SimpleITK cannot read the series.
    """
    series = sitk.ImageSeriesReader()
    series.SetFileNames(dicom_series_files(path))
    return series.Execute()


def is_dicom_series(path: str | Path) -> bool:
    """True when ``path`` names a DICOM series: a folder, or a DICOM Part 10 file (read as its whole series)."""
    return Path(path).is_dir() or is_dicom_file(path)


def read_geometry(path: str | Path) -> Geometry:
    """Read the grid of an image file (NIfTI, MHA/NRRD, or a DICOM series) from its header.

    Args:
        path: the file, or a DICOM series: a folder holding it alone, or one of its files (see
            :func:`dicom_series_files`).

    Returns:
        Its :class:`Geometry`; ``spacing_note`` says when the NIfTI header quirk was met.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read as an image, or a folder holds no DICOM series or several.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if is_nifti(path):
            img = nib.load(str(path))
            affine, note = resolve_nifti_affine(img, str(path))
            return Geometry(str(path), tuple(int(s) for s in img.shape), affine,
                            tuple(float(s) for s in _spacing_of(affine)), np.array(img.affine), note)
        if is_dicom_series(path):
            # the slice spacing of a series is only known from all its files: read the series
            info = read_dicom_series(path)
            size = list(info.GetSize())
        else:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            size = list(reader.GetSize())
            if reader.GetNumberOfComponents() > 1:
                size = size + [reader.GetNumberOfComponents()]
            info = sitk.Image([1] * reader.GetDimension(), sitk.sitkUInt8)
            info.SetSpacing(reader.GetSpacing())
            info.SetOrigin(reader.GetOrigin())
            info.SetDirection(reader.GetDirection())
        affine = _sitk_affine(info)
        return Geometry(str(path), tuple(int(s) for s in size), affine,
                        tuple(float(s) for s in _spacing_of(affine)), affine.copy(), None)
    except (OSError, RuntimeError, nib.filebasedimages.ImageFileError) as err:
        raise ValueError(f"{path}: cannot read the image header ({err})") from err


# ---------------------------------------------------------------------------------------------
# Grid checks of a case's files
# ---------------------------------------------------------------------------------------------
def _is_4d(geometry: Geometry) -> bool:
    return len(geometry.shape) > 3 and int(np.prod(geometry.shape[3:])) > 1


def grid_difference(a: Geometry, b: Geometry, tolerance_mm: float) -> str | None:
    """Describe how two grids differ, or return ``None`` when they match within ``tolerance_mm``.

    Shapes must be equal; spacings, directions (as spacing-scaled affine columns) and origins must
    agree to ``tolerance_mm``. When either header has the pixdim/affine quirk its direction and
    origin are not trustworthy, so only shape and spacing are compared.
    """
    if a.spatial_shape != b.spatial_shape:
        return f"shape {a.spatial_shape} versus {b.spatial_shape}"
    if not np.allclose(a.spacing, b.spacing, atol=tolerance_mm, rtol=0):
        return f"spacing {format_mm(a.spacing)} mm versus {format_mm(b.spacing)} mm"
    if a.spacing_note is not None or b.spacing_note is not None:
        return None
    if not np.allclose(a.affine[:3, :3], b.affine[:3, :3], atol=tolerance_mm, rtol=0):
        return "orientation (affine directions) differs"
    if not np.allclose(a.affine[:3, 3], b.affine[:3, 3], atol=tolerance_mm, rtol=0):
        return f"origin {format_mm(a.affine[:3, 3])} mm versus {format_mm(b.affine[:3, 3])} mm"
    return None


def check_case_geometry(
    case_id: str | None,
    channel_paths: Sequence[tuple[str, str]],
    label_path: str | None = None,
    reference_path: str | None = None,
    resample_to_reference: Sequence[str] = (),
    tolerance_mm: float = 0.01,
) -> Geometry:
    """Check, from headers only, that a case's files can be stacked and labelled on one grid.

    Args:
        case_id: named in errors.
        channel_paths: ``(modality name, path)`` per channel, in channel order.
        label_path: the label file, which must lie on the reference grid.
        reference_path: the file whose grid is the case's grid; defaults to the first channel.
        resample_to_reference: modality names allowed to lie on another grid (they get resampled).
        tolerance_mm: tolerance on spacing, direction and origin.

    Returns:
        The reference :class:`Geometry` (its ``spacing_note`` says when the header quirk was met).

    Raises:
        CaseError: a file is missing, unreadable, or 4D (a time series offered as a channel).
        GeometryError: a channel or the label is not on the reference grid (names both files and
            the difference).
    """
    from pipeline.io.dtypes import check_image_dtype  # here, not at the top: dtypes imports this module

    if not channel_paths:
        raise CaseError(case_id, None, "no channel files given")
    geometries: dict[str, Geometry] = {}

    def geometry_of(path: str) -> Geometry:
        if path not in geometries:
            check_image_dtype(path, case_id)
            try:
                geometries[path] = read_geometry(path)
            except (FileNotFoundError, ValueError) as err:
                raise CaseError(case_id, path, str(err)) from err
        return geometries[path]

    reference_path = reference_path or channel_paths[0][1]
    reference = geometry_of(reference_path)
    for name, path in list(channel_paths) + ([("label", label_path)] if label_path else []):
        geometry = geometry_of(path)
        if _is_4d(geometry):
            raise CaseError(
                case_id,
                path,
                f"{name} is a 4D file (shape {geometry.shape}) and cannot be one channel; 4D source data "
                "such as CT_4DPWI is left out of the channels (choose 3D maps with --channels)",
            )
        if name in resample_to_reference:
            continue
        difference = grid_difference(geometry, reference, tolerance_mm)
        if difference is not None:
            raise GeometryError(
                case_id,
                path,
                f"{name} is not on the grid of the reference file {reference_path!r}: {difference}",
            )
    return reference
