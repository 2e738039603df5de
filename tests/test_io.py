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


def test_atomic_writes_fsync_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    import os

    from pipeline.io import atomic_write_text

    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    target = tmp_path / "out" / "table.csv"
    atomic_write_text(target, "a,b\n")
    assert len(synced) == 2
    assert ".table.csv.partial-" in synced[0]  # the temporary file, before it became the final name
    assert synced[1] == str(target.parent)  # the folder, after the rename
    assert target.read_text() == "a,b\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.csv"]


def test_a_failed_atomic_write_leaves_neither_the_file_nor_its_temporary(tmp_path):
    from pipeline.io import atomic_path

    target = tmp_path / "mask.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk went away")
    assert list(tmp_path.iterdir()) == []
