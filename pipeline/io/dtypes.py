"""The one data-type check of image files, from the header only: integers and floats are read, others refused."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import SimpleITK as sitk

from pipeline.io.geometry import _dicom_series_files, is_nifti


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
