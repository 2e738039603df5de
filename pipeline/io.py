"""File input and output: atomic writes, NIfTI header geometry (with the pixdim/sform quirk), readers."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import nibabel as nib


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, else removed.

    The temporary name keeps the final suffix (``.nii.gz``...) so that writers choosing a format by
    extension behave. A reader never sees a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, then rename). Returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically. Returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def save_nifti_atomic(image: nib.Nifti1Image, path: str | Path) -> Path:
    """Save a nibabel image to ``path`` (``.nii`` or ``.nii.gz``) atomically. Returns ``path``."""
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)
