"""A case that predictions can be paired with, reading its image files, and which file names are images.

:class:`EvaluationCase` is the record that every truth source (see :mod:`pipeline.evaluation.truth`) yields;
:func:`read_volume` reads a mask or map of it; :func:`is_prediction_name` tells the image files of a folder
(masks and maps) from the files a run writes beside them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.data.datalist import natural_key
from pipeline.io import Geometry, read_array, read_geometry
from pipeline.manifest import PROBABILITIES_SUFFIX, RUN_FILES

_MASK_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")


@dataclass
class EvaluationCase:
    """One case that predictions can be paired with.

    Attributes:
        case_id: the case id (unique among the truth cases, see ``key``).
        label: the ground-truth mask file, ``None`` when the case has none.
        split: ``training``/``testing`` when known.
        smir_id: ISLES 2018: the SMIR id of the case's CT_MTT folder (submissions are named by it).
        modalities: modality name -> image file (CBF, Tmax, ...), empty when unknown.
        key: the name the case goes by in the tables: ``case_id``, or ``<split>/<case_id>`` when two
            truth cases share a case id (ISLES 2018 training and test cases are both ``case_1``...).
        label_values: the dataset profile's mapping of label file values to 0/1 (``{255: 1}``), when the
            truth comes with a profile that declares one; the label must hold {0, 1} after it.
    """

    case_id: str
    label: str | None = None
    split: str | None = None
    smir_id: str | None = None
    modalities: dict[str, str] = field(default_factory=dict)
    key: str = ""
    label_values: dict | None = None

    def __post_init__(self):
        if not self.key:
            self.key = self.case_id

    def modality(self, name: str) -> str | None:
        """The file of modality ``name`` (case-insensitive), or ``None``."""
        for key, path in self.modalities.items():
            if key.lower() == name.lower():
                return path
        return None


def read_volume(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read an image file (NIfTI with nibabel, MHA/NRRD with SimpleITK) as an (x, y, z) array.

    Trailing axes of length 1 beyond the third are dropped (a mask saved as 256x256xNx1).

    Args:
        path: the image file.

    Returns:
        ``(array, geometry)``; the geometry is :func:`pipeline.io.read_geometry`'s, whose spacing
        follows the header's ``pixdim`` when the affine disagrees with it.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read as an image.
    """
    path = Path(path)
    geometry = read_geometry(path)
    try:
        data = read_array(path)
    except (OSError, RuntimeError, EOFError, zlib.error, nib.filebasedimages.ImageFileError) as err:
        raise ValueError(f"{path}: cannot read the image ({err})") from err
    except (ValueError, TypeError) as err:  # truncated uncompressed data, an unsupported data type
        raise ValueError(f"{path}: cannot read the image ({err})") from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return np.asarray(data), geometry


def is_prediction_name(name: str) -> bool:
    """Whether a file name can be a prediction: an image suffix, not hidden, not ``manifest.csv``,
    ``failures.csv`` or a ``*_probabilities.npz`` map."""
    lower = name.lower()
    return (
        not name.startswith(".") and name not in RUN_FILES and not lower.endswith(PROBABILITIES_SUFFIX)
        and lower.endswith(_MASK_SUFFIXES)
    )


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    paths = folder.rglob("*") if recursive else folder.iterdir()
    found = [
        p for p in paths
        if p.is_file() and is_prediction_name(p.name)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found, key=lambda p: natural_key(str(p.relative_to(folder))))
