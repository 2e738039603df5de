"""Image files written atomically: a nibabel image, and a mask on a reference file's grid and header."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from pipeline.io.atomic import atomic_path
from pipeline.io.geometry import _LPS_TO_RAS, _spacing_of, is_nifti, read_geometry


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
