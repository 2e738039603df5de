"""Atomic writes: a reader never sees a partial file, a failed write leaves nothing behind."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pipeline.io import atomic_path, atomic_write_json, save_nifti_atomic


def test_failed_write_leaves_neither_a_partial_file_nor_a_temporary(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_version(tmp_path):
    target = atomic_write_json(tmp_path / "out.json", {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("interrupted")
    assert target.read_text().strip().endswith("}") and '"version": 1' in target.read_text()


def test_nifti_is_saved_with_its_compression_suffix(tmp_path):
    path = save_nifti_atomic(nib.Nifti1Image(np.ones((3, 3, 2), np.uint8), np.eye(4)), tmp_path / "m.nii.gz")
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip magic
    assert nib.load(path).get_fdata().sum() == 18
    assert [p.name for p in tmp_path.iterdir()] == ["m.nii.gz"]


def test_written_files_get_the_mode_of_an_ordinary_open(tmp_path):
    import os

    from pipeline.io import _UMASK

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = atomic_write_json(tmp_path / "out.json", {"version": 1})
    assert os.stat(atomic).st_mode & 0o777 == os.stat(plain).st_mode & 0o777 == 0o666 & ~_UMASK
