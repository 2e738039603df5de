"""Dataset fingerprint: per-case rows, failures reported per case, the summary and its files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipeline.planning.fingerprint import compute_fingerprint, summarize_fingerprint, write_fingerprint
from pipeline.data.profiles import load_profile
from pipeline.data.records import CaseRecord

CHANNELS = ("CBF", "CBV", "MTT", "Tmax")


def write(path, data, spacing=(0.9, 0.9, 12.0)):
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return str(path)


def make_record(tmp_path, case_id, slices=2, lesion_voxels=100, patient=None, spacing=(0.9, 0.9, 12.0)):
    folder = tmp_path / case_id
    folder.mkdir()
    shape = (20, 20, slices)
    brain = np.zeros(shape, bool)
    brain[4:16, 4:16, :] = True
    modalities = {}
    for i, name in enumerate(CHANNELS):
        data = np.where(brain, 10.0 * (i + 1), 0.0)
        modalities[name] = write(folder / f"{name}.nii", data.astype(np.float64 if name in ("MTT", "Tmax") else np.uint16), spacing)
    modalities["CT"] = write(folder / "CT.nii", np.full(shape, 30, np.int32), spacing)
    label = np.zeros(shape, np.uint8)
    label.reshape(-1)[:lesion_voxels] = 1
    return CaseRecord(case_id, "training", modalities, write(folder / "OT.nii", label, spacing), str(folder),
                      patient_id=patient)


def test_rows_hold_geometry_intensities_and_lesion_volume(tmp_path):
    profile = load_profile("isles2018")
    table, failures = compute_fingerprint([make_record(tmp_path, "case_1", lesion_voxels=100)], profile)
    assert failures == []
    row = table.iloc[0]
    assert (row.shape_x, row.shape_y, row.shape_z) == (20, 20, 2)
    assert row.spacing_z == pytest.approx(12.0)
    assert row.lesion_ml == pytest.approx(100 * 0.9 * 0.9 * 12.0 / 1000, rel=1e-5)
    assert row.CBF_p50 == pytest.approx(10.0) and row.Tmax_p50 == pytest.approx(40.0)  # inside the brain only
    assert row.brain_ml == pytest.approx(12 * 12 * 2 * 0.9 * 0.9 * 12.0 / 1000, rel=1e-5)
    assert row.CBF_dtype == "uint16" and row.MTT_dtype == "float64"


def test_a_bad_case_is_reported_and_the_others_carry_on(tmp_path):
    profile = load_profile("isles2018")
    good = make_record(tmp_path, "case_1")
    bad = make_record(tmp_path, "case_2")
    bad.modalities["CBV"] = write(tmp_path / "case_2" / "CBV_other.nii", np.zeros((20, 20, 3), np.uint16))
    table, failures = compute_fingerprint([good, bad], profile)
    assert list(table.case_id) == ["case_1"]
    assert failures[0]["case_id"] == "case_2" and "CBV_other.nii" in failures[0]["error"]


def test_summary_counts_patients_slabs_and_lesions(tmp_path):
    profile = load_profile("isles2018")
    records = [
        make_record(tmp_path, "case_1", slices=2, patient="Train_1", lesion_voxels=50),
        make_record(tmp_path, "case_2", slices=2, patient="Train_1", lesion_voxels=150),
        make_record(tmp_path, "case_3", slices=8, patient="Train_2", spacing=(1.0, 1.0, 5.0)),
    ]
    table, _ = compute_fingerprint(records, profile)
    assert list(table.slabs_of_patient) == [2, 2, 1]
    summary = summarize_fingerprint(table, profile)
    assert summary["training_cases"] == 3 and summary["patients"] == 2
    assert summary["slabs"] == {"2x12mm": 2, "8x5mm": 1}
    assert summary["two_slice_fraction"] == pytest.approx(2 / 3)
    paths = write_fingerprint(table, summary, tmp_path / "out")
    assert len(pd.read_csv(paths[0])) == 3
    assert json.loads(paths[1].read_text())["summary"]["patients"] == 2
