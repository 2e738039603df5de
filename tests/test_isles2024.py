"""ISLES 2024 end to end on the synthetic data in its layout: synth -> prepare -> train -> predict -> evaluate."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.__main__ import main
from pipeline.data import isles2024
from pipeline.data.layouts import detect_layout
from pipeline.data.profiles import load_profile
from pipeline.errors import CaseError
from pipeline.evaluation.lesion_matching import convention_lesion_counts
from pipeline.formats import ISLES2024_CONTAINER_TEST_FOLDER, isles2024_container_input, isles2024_file

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
    assert main(["predict", "--in-process", "--bundle", str(BUNDLE), "--input", str(datalist), "--model", str(run),
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
    truth = dataset / "data" / "TESTING_GROUND_TRUTH"

    # the challenge's format: several cases -> one container output folder per case, scored by the challenge's rules
    batch = tmp_path / "batch"
    assert main(["predict", "--in-process", "--bundle", str(BUNDLE), "--input", str(datalist), "--model", str(run),
                 "--output", str(batch), "--format", "isles2024"]) == 0
    for subject in ("sub-stroke0005", "sub-stroke0006"):
        output = sitk.ReadImage(str(batch / subject / "images" / "stroke-lesion-segmentation" / "output.mha"))
        nifti = nib.load(predictions / f"{subject}.nii.gz")  # the same model's nifti output above
        assert np.array_equal(sitk.GetArrayFromImage(output).transpose(2, 1, 0), np.asarray(nifti.dataobj))
    scored = tmp_path / "eval24" / "metrics.csv"
    assert main(["evaluate", "--pred", str(batch), "--truth", str(truth), "--metrics", "isles2024",
                 "--out", str(scored)]) == 0
    summary = json.loads((tmp_path / "eval24" / "metrics_summary.json").read_text())
    assert summary["metrics"] == "isles2024" and summary["counts"]["scored"] == 2
    assert "IoU >= 0.2" in summary["conventions"]["lesion_f1"]

    # the container's own run: one case from /input, output.mha at the top, on the NCCT's grid (geometry included)
    container_input = dataset / "data" / ISLES2024_CONTAINER_TEST_FOLDER / "sub-stroke0006"
    output_dir = tmp_path / "output"
    assert main(["predict", "--in-process", "--bundle", str(BUNDLE), "--input", str(container_input),
                 "--model", str(run), "--output", str(output_dir), "--format", "isles2024"]) == 0
    written = output_dir / "images" / "stroke-lesion-segmentation" / "output.mha"
    output, ncct = sitk.ReadImage(str(written)), sitk.ReadImage(str(container_input / isles2024_container_input("NCCT", "sub-stroke0006.mha")))
    assert output.GetSize() == ncct.GetSize()
    for got, want in ((output.GetOrigin(), ncct.GetOrigin()), (output.GetSpacing(), ncct.GetSpacing()),
                      (output.GetDirection(), ncct.GetDirection())):
        assert np.allclose(got, want, atol=1e-6)
    assert set(np.unique(sitk.GetArrayFromImage(output))) <= {0, 1}
    assert main(["evaluate", "--pred", str(output_dir), "--truth", str(truth), "--metrics", "isles2024",
                 "--out", str(tmp_path / "eval1" / "metrics.csv")]) == 0  # the manifest names the case
    # a second run into the folder: refused without --overwrite, the earlier result unchanged
    before = written.read_bytes()
    assert main(["predict", "--in-process", "--bundle", str(BUNDLE), "--input", str(container_input),
                 "--model", str(run), "--output", str(output_dir), "--format", "isles2024"]) == 2
    assert written.read_bytes() == before
    # what --overwrite replaces, and keeps, of these subfolders: tests/reliability/test_container_outputs.py


def test_synth_writes_the_test_subjects_as_the_challenge_container_receives_them(dataset):
    data = dataset / "data"
    for subject in ("sub-stroke0005", "sub-stroke0006"):
        folder = data / ISLES2024_CONTAINER_TEST_FOLDER / subject
        ncct = sitk.ReadImage(str(folder / isles2024_container_input("NCCT", f"{subject}.mha")))
        tmax = sitk.ReadImage(str(folder / isles2024_container_input("Tmax", f"{subject}.mha")))
        source = sitk.ReadImage(str(data / isles2024_file(subject, "ncct")))
        for image in (ncct, tmax):
            assert image.GetSize() == source.GetSize()
            assert np.allclose(image.GetOrigin(), source.GetOrigin()) and np.allclose(image.GetDirection(), source.GetDirection())
            assert np.allclose(image.GetSpacing(), source.GetSpacing())
        assert np.array_equal(sitk.GetArrayFromImage(ncct), sitk.GetArrayFromImage(source))
    assert not (data / ISLES2024_CONTAINER_TEST_FOLDER / "sub-stroke0001").exists()  # training subjects: BIDS only


def test_a_container_input_folder_is_one_test_case_of_the_isles2024_layout(dataset, tmp_path):
    folder = dataset / "data" / ISLES2024_CONTAINER_TEST_FOLDER / "sub-stroke0005"
    assert detect_layout(folder) == "isles2024"
    (record,) = isles2024.discover(folder, load_profile("isles2024"))
    assert (record.case_id, record.split, record.label) == ("sub-stroke0005", "testing", None)
    assert sorted(record.modalities) == ["CBF", "CBV", "MTT", "NCCT", "Tmax"]
    assert record.modalities["Tmax"].endswith("images/preprocessed-tmax-map/sub-stroke0005.mha")
    # the raw parameter maps lie on the CTP grid: an input that has them still reads the preprocessed ones
    copy = tmp_path / "input"
    shutil.copytree(folder, copy)
    (copy / "images" / "tmax-parameter-map").mkdir()
    shutil.copy(copy / "images" / "preprocessed-tmax-map" / "sub-stroke0005.mha",
                copy / "images" / "tmax-parameter-map" / "raw.mha")
    (record,) = isles2024.discover(copy, load_profile("isles2024"))
    assert record.modalities["Tmax"].endswith("preprocessed-tmax-map/sub-stroke0005.mha")
    # grand-challenge gives one image per interface: two are an error naming the folder
    shutil.copy(copy / "images" / "non-contrast-ct" / "sub-stroke0005.mha", copy / "images" / "non-contrast-ct" / "b.mha")
    with pytest.raises(CaseError, match="2 images in one input folder") as err:
        isles2024.discover(copy, load_profile("isles2024"))
    assert err.value.path.endswith("non-contrast-ct")


def test_isles2024_lesion_matching_is_one_to_one_at_iou_02_as_panoptica_computes_it():
    from panoptica import (ConnectedComponentsInstanceApproximator, InputType, NaiveThresholdMatching,
                           Panoptica_Evaluator)

    truth = np.zeros((40, 40, 3), np.uint8)
    pred = np.zeros_like(truth)
    truth[2:12, 2:12, 1] = 1          # 100 voxels
    pred[2:5, 2:5, 1] = 1             # inside it, IoU 0.09: found under ISLES 2022, not matched under ISLES 2024
    truth[20:26, 20:26, 1] = 1
    pred[21:27, 21:27, 1] = 1         # IoU 25/47 > 0.2: matched
    pred[32:35, 32:35, 0] = 1         # spurious
    counts = convention_lesion_counts("isles2024", pred, truth)
    assert (counts.tp, counts.fp, counts.fn, counts.pred_lesions, counts.truth_lesions) == (1, 2, 1, 3, 2)
    reference = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC, instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=NaiveThresholdMatching(matching_threshold=0.2),
    ).evaluate(pred, truth, verbose=False)["ungrouped"]
    assert counts.f1 == pytest.approx(reference.rq)
    assert convention_lesion_counts("isles2022", pred, truth).tp == 2
    empty = np.zeros_like(truth)
    assert convention_lesion_counts("isles2024", empty, empty).f1 == 1.0  # the challenge's empty_value
    assert convention_lesion_counts("isles2024", pred, empty).f1 == 0.0
    with pytest.raises(ValueError, match="unknown metrics convention"):
        convention_lesion_counts("isles2099", pred, truth)
