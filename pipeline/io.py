"""File input and output: atomic writes, NIfTI header geometry (with the pixdim/sform quirk), readers."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from monai.data import ImageReader, NibabelReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".dcm")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES
# ITK works in LPS, MONAI and NIfTI in RAS: flip the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _read_umask() -> int:
    """The process umask, read once at import (setting and restoring it is the only portable getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


# Temporary files of atomic writes are named ``.<final name>.partial-<random><suffix>``: hidden, never taken for a
# result (they do not end in the final name), and recognisable so a later run can clear the ones a killed run left.
PARTIAL_MARKER = ".partial-"


def fsync_directory(folder: str | Path) -> None:
    """Make a rename or removal in ``folder`` durable (``fsync`` of the directory; a no-op where unsupported)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """Flush a closed file's data to disk (``fsync``)."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_partial_file(path: str | Path) -> bool:
    """True for the temporary file of an atomic write (see :func:`atomic_path`)."""
    name = Path(path).name
    return name.startswith(".") and PARTIAL_MARKER in name


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes left in ``folder`` (not recursive).

    Only call it where no other writer is active (a run that holds the folder's lock, or its own staging folder).

    Returns:
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        if path.is_file() and is_partial_file(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is made durable and renamed onto ``path``, else removed.

    The temporary file is flushed to disk (``fsync``) before the rename and the folder after it, so a
    crash or power loss leaves either the old file or the complete new one. Its name keeps the final
    suffix (``.nii.gz``...) so that writers choosing a format by extension behave, and marks it as a
    partial file (:func:`is_partial_file`). On any error, a full disk included, the temporary file is
    removed and the error re-raised; a reader never sees a half-written file under the final name.

    Raises:
        OSError: the folder cannot be created or written (full disk, permissions), re-raised as it came.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{PARTIAL_MARKER}", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates mode 0600; give the file the mode an ordinary open() would (0666 less the umask)
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
        fsync_directory(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, then rename). Returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically. Returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def save_nifti_atomic(image: nib.Nifti1Image, path: str | Path) -> Path:
    """Save a nibabel image to ``path`` (``.nii`` or ``.nii.gz``) atomically. Returns ``path``."""
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)


def write_mask_like(mask: np.ndarray, reference_path: str | Path, out_path: str | Path, dtype=np.uint8) -> Path:
    """Write ``mask`` on the grid of ``reference_path``, with that file's header, atomically.

    For a NIfTI reference the header is copied as it is (affine, pixdim, qform and sform codes,
    the pixdim/affine quirk included); only the data type and scaling change. Output to ``.mha``
    or ``.nrrd`` takes the reference's geometry through SimpleITK.

    Args:
        mask: array of the reference's spatial shape, in the reference file's voxel order.
        reference_path: the file whose grid and header the output takes.
        out_path: ``.nii``, ``.nii.gz``, ``.mha`` or ``.nrrd``.
        dtype: output data type (uint8 for masks).

    Returns:
        ``out_path``.

    Raises:
        ValueError: the mask's shape is not the reference's spatial shape.
    """
    reference_path, out_path = Path(reference_path), Path(out_path)
    geometry = read_geometry(reference_path)
    mask = np.asarray(mask)
    if tuple(mask.shape) != tuple(geometry.spatial_shape):
        raise ValueError(
            f"{out_path.name}: prediction of shape {tuple(mask.shape)} is not on the grid of {str(reference_path)!r} "
            f"{tuple(geometry.spatial_shape)}"
        )
    data = mask.astype(dtype)
    if is_nifti(out_path):
        if is_nifti(reference_path):
            header = nib.load(str(reference_path)).header.copy()
            header.set_data_dtype(dtype)
            header.set_slope_inter(1.0, 0.0)
            header.set_data_shape(data.shape)
            image = nib.Nifti1Image(data, None, header=header)
        else:
            image = nib.Nifti1Image(data, geometry.affine)
        return save_nifti_atomic(image, out_path)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    lps = _LPS_TO_RAS @ geometry.affine
    spacing = _spacing_of(lps)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in lps[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing).ravel()))
    with atomic_path(out_path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return out_path


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


def _dicom_series_files(folder: Path) -> list[str]:
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    if not files:
        raise ValueError(f"{folder}: no DICOM series found in this folder")
    return list(files)


def read_geometry(path: str | Path) -> Geometry:
    """Read the grid of an image file (NIfTI, MHA/NRRD, or a DICOM series folder) from its header.

    Args:
        path: the file, or a folder holding one DICOM series.

    Returns:
        Its :class:`Geometry`; ``spacing_note`` says when the NIfTI header quirk was met.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read as an image.
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
        if path.is_dir():
            # the slice spacing of a series is only known from all its files: read the series
            series = sitk.ImageSeriesReader()
            series.SetFileNames(_dicom_series_files(path))
            info = series.Execute()
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
# Readers for MONAI's LoadImage
# ---------------------------------------------------------------------------------------------
class SpacingAwareNibabelReader(NibabelReader):
    """MONAI's ``NibabelReader`` that repairs the pixdim-versus-affine header quirk our way.

    MONAI's own repair (``correct_nifti_header_if_necessary``) silently prefers the qform, or else
    rewrites ``pixdim`` to the affine's 1 mm. Here, when a file's ``pixdim`` and its affine
    disagree (see :func:`resolve_nifti_affine`), a ``UserWarning`` names the file and says which
    spacing is used, and the loaded image's affine carries the ``pixdim`` spacing. The file on disk
    is never changed. Takes the same arguments as ``NibabelReader``.
    """

    def read(self, data, **kwargs):
        """Load one NIfTI file or a list of them; returns nibabel image(s) with a consistent affine."""
        images = []
        self.filenames = ensure_tuple(data)
        for name in self.filenames:
            img = nib.load(name, **{**self.kwargs, **kwargs})
            affine, note = resolve_nifti_affine(img, str(name))
            if note is not None:
                warnings.warn(note, UserWarning, stacklevel=2)
                img.set_sform(affine, code=int(img.header["sform_code"]) or 2)
                img.set_qform(affine, code=int(img.header["qform_code"]) or 1)
            images.append(img)
        return images if len(images) > 1 else images[0]


# MONAI has readers for nibabel, ITK and pydicom but none built on SimpleITK.
class SimpleITKReader(ImageReader):
    """Read ``.mha``/``.mhd``/``.nrrd`` files and DICOM series folders with SimpleITK.

    The array is returned in (x, y, z) order like NIfTI data, and the affine in RAS like MONAI's
    other readers. Vector images put their components last (``original_channel_dim = -1``).
    """

    def verify_suffix(self, filename) -> bool:
        """True for the suffixes SimpleITK is used for here, and for folders (DICOM series)."""
        names = filename if isinstance(filename, (list, tuple)) else [filename]
        return all(Path(n).is_dir() or str(n).lower().endswith(SITK_SUFFIXES) for n in names)

    def read(self, data, **kwargs):
        """Read one path or a list of paths; returns a SimpleITK image or a list of them.

        Raises:
            ValueError: a folder holds no DICOM series.
        """
        images = []
        for name in data if isinstance(data, (list, tuple)) else [data]:
            path = Path(name)
            if path.is_dir():
                series = sitk.ImageSeriesReader()
                series.SetFileNames(_dicom_series_files(path))
                images.append(series.Execute())
            else:
                images.append(sitk.ReadImage(str(path)))
        return images if len(images) > 1 else images[0]

    def get_data(self, img):
        """Return ``(array, meta)`` like MONAI's readers; several images are stacked on a new first axis."""
        arrays, compatible = [], {}
        for image in img if isinstance(img, (list, tuple)) else [img]:
            array = sitk.GetArrayFromImage(image)
            spatial = min(image.GetDimension(), 3)
            vector = image.GetNumberOfComponentsPerPixel() > 1
            # SimpleITK gives (z, y, x[, c]); reverse the spatial axes to (x, y, z).
            order = list(range(spatial))[::-1] + ([spatial] if vector else [])
            array = np.ascontiguousarray(np.transpose(array, order))
            affine = _sitk_affine(image)
            meta = {
                MetaKeys.AFFINE: affine.copy(),
                MetaKeys.ORIGINAL_AFFINE: affine,
                MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape[:spatial]),
                MetaKeys.SPACE: SpaceKeys.RAS,
                MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if vector else float("nan"),
                "spacing": np.asarray(image.GetSpacing()[:spatial]),
            }
            arrays.append(array)
            _copy_compatible_dict(meta, compatible)
        return _stack_images(arrays, compatible), compatible


def read_array(path: str | Path) -> np.ndarray:
    """Read an image's voxels as stored, in (x, y, z[, ...]) order, without resampling.

    NIfTI is read with nibabel (scaling applied), MHA/NRRD files and DICOM series folders with
    :class:`SimpleITKReader` (vector components last).

    Raises:
        OSError, RuntimeError, EOFError, nibabel's ImageFileError: the file cannot be read.
    """
    if is_nifti(path):
        return np.asanyarray(nib.load(str(path)).dataobj)
    reader = SimpleITKReader()
    array, _ = reader.get_data(reader.read(str(path)))
    return array


def image_readers() -> list[ImageReader]:
    """The readers ``LoadImage`` should use: SimpleITK for MHA/NRRD/DICOM, nibabel for NIfTI (tried first)."""
    return [SimpleITKReader(), SpacingAwareNibabelReader()]


# ---------------------------------------------------------------------------------------------
# Data types
# ---------------------------------------------------------------------------------------------
def check_image_dtype(path: str | Path, case_id: str | None = None) -> str:
    """Check, from the header only, that an image file stores numbers this project can read; return the type.

    Integer and floating-point voxels are read (and cast to float32 for the networks). A NIfTI file of datatype
    bool (``DT_BINARY``), complex, RGB/RGBA or any other structured type has no meaning as an intensity or as a
    0/1 mask, and casting it would be silent data loss: it is refused. This is the one data-type check:
    ``prepare``'s fingerprint runs it on every file a datalist will name (channels, reference, label), and any
    other reader of case files can call it before reading the voxels.

    Args:
        path: a NIfTI, MHA/NRRD file, or a folder holding one DICOM series.
        case_id: named in the error.

    Returns:
        The stored data type: the numpy name for NIfTI (``uint16``, ``float64``...), SimpleITK's pixel type
        description otherwise (``16-bit signed integer``).

    Raises:
        CaseError: the file does not exist, its header cannot be read, or it stores an unsupported data type
            (the message names the case, the file and the type, and says what to save it as).
    """
    import logging

    from nibabel.spatialimages import HeaderDataError

    from pipeline.errors import CaseError

    path = Path(path)
    advice = "save it as an integer or float image (uint8 0/1 for a mask, int16/float32 for a map)"
    if not path.exists():
        raise CaseError(case_id, path, "no such file")
    if is_nifti(path):
        # nibabel also logs (to stderr) the header problem it raises; the CaseError says it once
        logger, level = nib.imageglobals.logger, nib.imageglobals.logger.level
        logger.setLevel(logging.CRITICAL + 1)
        try:
            dtype = nib.load(str(path)).get_data_dtype()
        except HeaderDataError as err:
            code = _raw_nifti_datatype(path)
            if code is None:
                raise CaseError(case_id, path, f"cannot read the NIfTI header ({err})") from err
            name = nib.nifti1.data_type_codes.label.get(code, "unknown")
            if name == "binary":
                name = "DT_BINARY: bool, 1 bit per voxel"
            raise CaseError(
                case_id, path,
                f"the file stores NIfTI datatype {code} ({name}), which cannot be read as numbers; {advice}",
            ) from err
        except Exception as err:  # noqa: BLE001 - nibabel raises many types for a damaged header; name the file
            reason = str(err).strip() or type(err).__name__
            raise CaseError(case_id, path, f"cannot read the NIfTI header ({reason})") from err
        finally:
            logger.setLevel(level)
        if dtype.kind not in "iuf" or dtype.fields is not None:
            kind = {"b": "bool", "c": "complex", "V": "structured (e.g. RGB)"}.get(dtype.kind, "non-numeric")
            raise CaseError(
                case_id, path,
                f"the file stores data type {dtype} ({kind}), which is not read as intensities or a 0/1 mask "
                f"(it would be cast silently); {advice}",
            )
        return str(dtype)
    try:
        target = _dicom_series_files(path)[0] if path.is_dir() else str(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(target))
        reader.ReadImageInformation()
        description = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    except Exception as err:  # noqa: BLE001 - SimpleITK raises RuntimeError, the file system OSError; name the file
        reason = str(err).strip() or type(err).__name__
        raise CaseError(case_id, path, f"cannot read the image header ({reason})") from err
    if "complex" in description.lower():
        raise CaseError(
            case_id, path,
            f"the file stores {description} voxels, which are not read as intensities or a 0/1 mask; {advice}",
        )
    return description


def _raw_nifti_datatype(path: Path) -> int | None:
    """The ``datatype`` code of a NIfTI-1/2 header read without nibabel's checks (``None`` when unreadable)."""
    from nibabel.openers import ImageOpener

    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        try:
            with ImageOpener(str(path)) as f:
                header = klass.from_fileobj(f, check=False)
        except Exception:  # noqa: BLE001 - any failure means "not this header kind"
            continue
        if int(header["sizeof_hdr"]) == klass.sizeof_hdr:
            return int(header["datatype"])
    return None
