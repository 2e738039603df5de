"""ISLES 2024 end to end on the synthetic data in its layout: synth -> prepare -> train -> predict -> evaluate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.__main__ import main
from pipeline.formats import isles2024_file

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "isles_unetplusplus"
TINY = ["--set", "features=[4,4,8,8,8,8]", "--set", "batch_size=2", "--set", "cache_rate=0.0",
        "--set", "patch_size=[64,64,1]"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("isles2024")
    assert main(["synth", str(root / "data"), "--cases", "4", "--test-cases", "2", "--seed", "3",
                 "--layout", "isles2024"]) == 0
    return root


def test_synth_writes_the_isles2024_release_names(dataset):
    data = dataset / "data"
    for n in (1, 2, 3, 4):
        subject = f"sub-stroke{n:04d}"
        for suffix in ("ncct", "cbf", "cbv", "mtt", "tmax", "lesion-msk"):
            assert (data / isles2024_file(subject, suffix)).is_file(), (subject, suffix)
    for n in (5, 6):  # test subjects: no follow-up mask in the dataset, their masks beside it
        subject = f"sub-stroke{n:04d}"
        assert (data / isles2024_file(subject, "ncct")).is_file()
        assert not (data / isles2024_file(subject, "lesion-msk")).exists()
        assert (data / "TESTING_GROUND_TRUTH" / f"{subject}.nii.gz").is_file()
    ncct = nib.load(data / isles2024_file("sub-stroke0001", "ncct"))
    cbf = nib.load(data / isles2024_file("sub-stroke0001", "cbf"))
    assert ncct.shape == cbf.shape and np.allclose(ncct.affine, cbf.affine)  # the maps lie on the NCCT grid
    with open(data / "synth_cases.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == [f"sub-stroke{n:04d}" for n in range(1, 7)]
    assert all(r["patient_id"] == r["case_id"] for r in rows)  # one volume per patient


def test_the_isles2024_chain_runs_from_synth_to_evaluate(dataset, tmp_path):
    datalist = tmp_path / "datalist.json"
    assert main(["prepare", "--root", str(dataset / "data"), "--out", str(datalist), "--folds", "2"]) == 0
    written = json.loads(datalist.read_text())
    assert (written["layout"], written["profile"], written["reference_modality"]) == ("isles2024", "isles2024", "NCCT")
    assert written["channels"] == ["NCCT", "CBF", "CBV", "MTT", "Tmax"]  # no CTA in the synthetic data
    run = tmp_path / "run"
    assert main(["train", "--bundle", str(BUNDLE), "--datalist", str(datalist), "--fold", "0", "--epochs", "1",
                 "--output", str(run), "--postprocessing", "none", *TINY]) == 0
    predictions = tmp_path / "pred"
    assert main(["predict", "--bundle", str(BUNDLE), "--input", str(datalist), "--model", str(run),
                 "--output", str(predictions)]) == 0
    for subject in ("sub-stroke0005", "sub-stroke0006"):
        mask = nib.load(predictions / f"{subject}.nii.gz")
        ncct = nib.load(dataset / "data" / isles2024_file(subject, "ncct"))
        assert mask.shape == ncct.shape and np.allclose(mask.affine, ncct.affine)
    metrics = tmp_path / "eval" / "metrics.csv"
    assert main(["evaluate", "--pred", str(predictions), "--truth", str(dataset / "data" / "TESTING_GROUND_TRUTH"),
                 "--images", str(datalist), "--baseline", "threshold", "--out", str(metrics)]) == 0
    with open(metrics) as f:
        rows = list(csv.DictReader(f))
    assert sorted({(r["case_id"], r["method"], r["status"]) for r in rows}) == [
        (s, m, "ok") for s in ("sub-stroke0005", "sub-stroke0006") for m in ("model", "threshold")]
