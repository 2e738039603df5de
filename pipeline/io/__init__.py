"""File input and output: atomic writes, header geometry (with the NIfTI pixdim/sform quirk), data types, readers.

Modules: :mod:`~pipeline.io.atomic` (durable temporary-then-rename writes), :mod:`~pipeline.io.geometry`
(header grids and the checks that a case's files share one), :mod:`~pipeline.io.dtypes` (the data-type check),
:mod:`~pipeline.io.readers` (MONAI readers, loaded only when asked for: importing this package does not import
MONAI), :mod:`~pipeline.io.writers` (image files written atomically), :mod:`~pipeline.io.jsonfile` (reading JSON).
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.io.atomic import (
    _UMASK,  # noqa: F401 - imported by tests
    PARTIAL_MARKER,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    fsync_directory,
    fsync_file,
    is_partial_file,
    remove_stale_partials,
)
from pipeline.io.dtypes import check_image_dtype
from pipeline.io.geometry import (
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    SITK_SUFFIXES,
    Geometry,
    check_case_geometry,
    format_mm,
    grid_difference,
    is_nifti,
    read_geometry,
    resolve_nifti_affine,
)
from pipeline.io.jsonfile import read_json
from pipeline.io.writers import save_nifti_atomic, write_mask_like

# Names of pipeline.io.readers, which imports MONAI: resolved on first use (PEP 562), not at import.
_LAZY = {name: "pipeline.io.readers" for name in ("SimpleITKReader", "SpacingAwareNibabelReader", "image_readers",
                                                  "read_array")}

__all__ = [
    "IMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "PARTIAL_MARKER",
    "SITK_SUFFIXES",
    "Geometry",
    "SimpleITKReader",
    "SpacingAwareNibabelReader",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "check_case_geometry",
    "check_image_dtype",
    "format_mm",
    "fsync_directory",
    "fsync_file",
    "grid_difference",
    "image_readers",
    "is_nifti",
    "is_partial_file",
    "read_array",
    "read_geometry",
    "read_json",
    "remove_stale_partials",
    "resolve_nifti_affine",
    "save_nifti_atomic",
    "write_mask_like",
]


def __getattr__(name: str) -> Any:
    """Import :mod:`pipeline.io.readers` (and MONAI) the first time one of its names is asked for."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
