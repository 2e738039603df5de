"""Readers for MONAI's ``LoadImage``: NIfTI with our pixdim/affine repair, MHA/NRRD/DICOM through SimpleITK.

This is the one module of :mod:`pipeline.io` that imports MONAI (its readers subclass MONAI's): importing the
package does not load it; the package resolves its names on first use.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from monai.data import ImageReader, NibabelReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from pipeline.io.geometry import (
    SITK_SUFFIXES, _sitk_affine, is_dicom_series, is_nifti, read_dicom_series, resolve_nifti_affine,
)

# MONAI's LoadImage builds its pydicom reader whenever pydicom is installed, which announces that its GPU decoder
# plugin (nvImageCodec) is missing; this project reads DICOM series with SimpleITK, so the message is noise to users.
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin", category=UserWarning)
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)


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
    """Read ``.mha``/``.mhd``/``.nrrd`` files and DICOM series with SimpleITK.

    A DICOM series is named by its folder, or by one of its files (any suffix, or none) when the folder holds
    several series: a DICOM file is read as the whole series it belongs to
    (:func:`pipeline.io.geometry.dicom_series_files`).

    The array is returned in (x, y, z) order like NIfTI data, and the affine in RAS like MONAI's
    other readers. Vector images put their components last (``original_channel_dim = -1``).
    """

    def verify_suffix(self, filename) -> bool:
        """True for the suffixes SimpleITK is used for here, for folders and for DICOM files (DICOM series)."""
        names = filename if isinstance(filename, (list, tuple)) else [filename]
        return all(str(n).lower().endswith(SITK_SUFFIXES) or is_dicom_series(n) for n in names)

    def read(self, data, **kwargs):
        """Read one path or a list of paths; returns a SimpleITK image or a list of them.

        Raises:
            ValueError: a folder holds no DICOM series, or several.
        """
        images = []
        for name in data if isinstance(data, (list, tuple)) else [data]:
            path = Path(name)
            if is_dicom_series(path):
                images.append(read_dicom_series(path))
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

    NIfTI is read with nibabel (scaling applied), MHA/NRRD files and DICOM series (a folder, or one file of the
    series) with :class:`SimpleITKReader` (vector components last).

    Raises:
        OSError, RuntimeError, EOFError, nibabel's ImageFileError: the file cannot be read.
        ValueError: a DICOM folder holds no series, or several.
    """
    if is_nifti(path):
        return np.asanyarray(nib.load(str(path)).dataobj)
    reader = SimpleITKReader()
    array, _ = reader.get_data(reader.read(str(path)))
    return array


def image_readers() -> list[ImageReader]:
    """The readers ``LoadImage`` should use: SimpleITK for MHA/NRRD/DICOM, nibabel for NIfTI (tried first)."""
    return [SimpleITKReader(), SpacingAwareNibabelReader()]

