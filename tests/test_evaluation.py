"""Evaluation of a prediction folder: pairing by name, per-case and summary outputs, baseline, clinical volumes, CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipeline.__main__ import main
from pipeline.evaluation import (
    ROW_COLUMNS,
    evaluate_predictions,
    load_result,
    load_truth_cases,
    prediction_names,
)

SHAPE = (16, 16, 3)
SPACING = (1.0, 1.0, 2.0)  # 2 mm^3 per voxel


def write_image(path: Path, data: np.ndarray, spacing=SPACING, dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=dtype), affine), str(path))
    return path


def block(*slices) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[slices] = 1
    return mask


def core() -> np.ndarray:
    return block(slice(4, 8), slice(4, 8), 1)


def write_maps(folder: Path) -> dict[str, str]:
    """CBF 50 with a core of CBF 5, Tmax 2 with an 8x8x3 region of Tmax 9: the rule finds the core."""
    cbf = np.full(SHAPE, 50.0)
    cbf[core() != 0] = 5.0
    tmax = np.full(SHAPE, 2.0)
    tmax[2:10, 2:10, :] = 9.0
    mtt = np.full(SHAPE, 5.0)
    cbv = np.full(SHAPE, 4.0)
    return {
        name: str(write_image(folder / f"{name}.nii.gz", data, dtype=np.float32))
        for name, data in (("CBF", cbf), ("CBV", cbv), ("MTT", mtt), ("Tmax", tmax))
    }


def write_datalist(path: Path, training: list[dict], testing: list[dict] = ()) -> Path:
    def relative(record: dict) -> dict:
        out = dict(record)
        if "label" in out:
            out["label"] = os.path.relpath(out["label"], path.parent)
        if "modalities" in out:
            out["modalities"] = {k: os.path.relpath(v, path.parent) for k, v in out["modalities"].items()}
            out["image"] = list(out["modalities"].values())
        else:
            out["image"] = [out.get("label", "")]
        return out

    path.write_text(json.dumps({"training": [relative(r) for r in training],
                                "testing": [relative(r) for r in testing]}))
    return path


@pytest.fixture
def flat(tmp_path) -> tuple[Path, Path]:
    """A flat truth folder with case_1 and case_2 and a prediction folder with both."""
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    write_image(truth / "case_1.nii.gz", core())
    write_image(truth / "case_2.nii", block(slice(2, 6), slice(2, 6), slice(0, 2)))
    write_image(pred / "case_1.nii.gz", core())
    write_image(pred / "case_2.nii.gz", block(slice(2, 6), slice(2, 4), slice(0, 2)))
    return truth, pred


def model_rows(result) -> dict[str, dict]:
    return {r["case_id"]: r for r in result.rows if r["method"] == "model"}


def test_pairs_by_case_id_and_writes_the_csv_and_the_summary(flat, tmp_path):
    truth, pred = flat
    out = tmp_path / "eval" / "metrics.csv"
    result = evaluate_predictions(pred, truth, out)
    rows = model_rows(result)
    assert rows["case_1"]["status"] == "ok" and rows["case_1"]["dice"] == 1.0
    assert rows["case_2"]["dice"] == pytest.approx(2 * 16 / (16 + 32))
    assert rows["case_2"]["truth_volume_ml"] == pytest.approx(32 * 2 / 1000)
    table = pd.read_csv(out)
    assert list(table.columns) == list(ROW_COLUMNS) and len(table) == 2
    summary = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text())
    dice = summary["methods"]["model"]["metrics"]["dice"]
    assert dice["mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert dice["median"] == pytest.approx((1 + 2 / 3) / 2)
    assert dice["std"] == pytest.approx(np.std([1, 2 / 3], ddof=1))
    assert summary["counts"]["scored"] == 2 and summary["counts"]["predictions_without_truth"] == 0
    assert not (tmp_path / "eval" / "metrics_clinical.csv").exists()  # no Tmax maps known
    assert result.ok


def test_pairs_isles2018_submission_names_through_the_datalist_smir_id(tmp_path):
    label = write_image(tmp_path / "data" / "case_7" / "OT.nii", core())
    datalist = write_datalist(tmp_path / "data" / "datalist.json",
                              [{"case_id": "case_7", "label": str(label), "smir_id": "345678"}])
    write_image(tmp_path / "pred" / "SMIR.myteam.345678.nii", core())
    result = evaluate_predictions(tmp_path / "pred", datalist)
    assert model_rows(result)["case_7"]["dice"] == 1.0


def write_ground_truth(root: Path) -> Path:
    folder = root / "TESTING_GROUND_TRUTH"
    write_image(folder / "case_1" / "SMIR.Brain.XX.O.OT.100005" / "SMIR.Brain.XX.O.OT.100005.nii", core())
    with open(folder / "cases.csv", "w", newline="") as f:
        csv.writer(f).writerows([["case_id", "ot_id", "mtt_id", "patient_id"], ["case_1", "100005", "100003", "Test_1"]])
    return folder


def test_pairs_submission_names_through_the_ground_truth_cases_csv_with_maps_from_images(tmp_path):
    truth = write_ground_truth(tmp_path)
    maps = write_maps(tmp_path / "TESTING" / "case_1")
    images = write_datalist(tmp_path / "datalist.json", [],
                            [{"case_id": "case_1", "smir_id": "100003", "modalities": maps}])
    write_image(tmp_path / "pred" / "SMIR.team.100003.nii", core())
    result = evaluate_predictions(tmp_path / "pred", truth, images=images, baseline="threshold")
    assert model_rows(result)["case_1"]["dice"] == 1.0
    assert [r["dice"] for r in result.rows if r["method"] == "threshold"] == [1.0]
    assert result.clinical[0]["case_id"] == "case_1"


def test_pairs_isles2022_mask_names(tmp_path):
    one = write_image(tmp_path / "d" / "a.nii.gz", core())
    two = write_image(tmp_path / "d" / "b.nii.gz", core())
    datalist = write_datalist(tmp_path / "d" / "datalist.json", [
        {"case_id": "sub-strokecase0001", "label": str(one)},
        {"case_id": "sub-strokecase0002_ses-0002", "label": str(two)},
    ])
    write_image(tmp_path / "pred" / "sub-strokecase0001_ses-0001_msk.nii.gz", core())
    write_image(tmp_path / "pred" / "sub-strokecase0002_ses-0002_msk.nii.gz", core())
    result = evaluate_predictions(tmp_path / "pred", datalist)
    assert {c: r["status"] for c, r in model_rows(result).items()} == {
        "sub-strokecase0001": "ok", "sub-strokecase0002_ses-0002": "ok"}


def test_prediction_names_lists_every_reading_of_a_file_name():
    assert prediction_names("SMIR.team.123456.nii")[0] == ("smir_id", "123456")
    assert ("case_id", "sub-x1") in prediction_names("sub-x1_ses-0001_msk.nii.gz")
    assert prediction_names("case_3.nii.gz") == [("case_id", "case_3")]


def test_unpaired_predictions_and_truths_are_listed_and_warned_about(flat, tmp_path):
    truth, pred = flat
    (pred / "case_2.nii.gz").unlink()
    write_image(pred / "case_9.nii.gz", core())
    with pytest.warns(UserWarning) as caught:
        result = evaluate_predictions(pred, truth, tmp_path / "m.csv")
    messages = " ".join(str(w.message) for w in caught)
    assert "case_9.nii.gz" in messages and "case_2" in messages
    assert [u["prediction"] for u in result.unmatched_predictions] == [str(pred / "case_9.nii.gz")]
    assert [m["case_id"] for m in result.missing_predictions] == ["case_2"]
    statuses = dict(zip(pd.read_csv(tmp_path / "m.csv")["case_id"], pd.read_csv(tmp_path / "m.csv")["status"]))
    assert statuses == {"case_1": "ok", "case_9": "no_truth", "case_2": "no_prediction"}
    summary = json.loads((tmp_path / "m_summary.json").read_text())
    assert summary["counts"]["predictions_without_truth"] == 1 and summary["counts"]["truths_without_prediction"] == 1
    assert result.ok  # unpaired files are reported, not failures


def test_a_prediction_on_another_grid_fails_that_case_only_and_names_both_files(flat, tmp_path):
    truth, pred = flat
    write_image(pred / "case_2.nii.gz", block(slice(2, 6), slice(2, 6), slice(0, 2)), spacing=(0.9, 0.9, 2.0))
    result = evaluate_predictions(pred, truth, tmp_path / "m.csv")
    assert not result.ok
    (failure,) = result.failures
    assert failure["case_id"] == "case_2"
    assert str(pred / "case_2.nii.gz") in failure["error"] and str(truth / "case_2.nii") in failure["error"]
    assert "spacing" in failure["error"]
    assert model_rows(result)["case_1"]["dice"] == 1.0
    assert model_rows(result)["case_2"]["status"] == "failed"
    assert json.loads((tmp_path / "m_summary.json").read_text())["failures"][0]["case_id"] == "case_2"


def test_two_predictions_for_one_case_fail_that_case(tmp_path):
    label = write_image(tmp_path / "d" / "l.nii.gz", core())
    datalist = write_datalist(tmp_path / "d" / "datalist.json", [{"case_id": "case_1", "label": str(label), "smir_id": "42"}])
    write_image(tmp_path / "pred" / "case_1.nii.gz", core())
    write_image(tmp_path / "pred" / "SMIR.team.42.nii", core())
    result = evaluate_predictions(tmp_path / "pred", datalist)
    assert [f["case_id"] for f in result.failures] == ["case_1"]
    assert "several predictions" in result.failures[0]["error"]


def test_a_probability_map_is_not_a_mask(flat):
    truth, pred = flat
    write_image(pred / "case_2.nii.gz", np.linspace(0, 1, np.prod(SHAPE)).reshape(SHAPE), dtype=np.float32)
    result = evaluate_predictions(pred, truth)
    assert "not a binary mask" in result.failures[0]["error"]


@pytest.fixture
def with_maps(tmp_path) -> tuple[Path, Path]:
    """A datalist with one case whose CBF/Tmax give the threshold rule the truth exactly."""
    maps = write_maps(tmp_path / "data" / "case_1")
    label = write_image(tmp_path / "data" / "case_1" / "OT.nii.gz", core())
    datalist = write_datalist(tmp_path / "data" / "datalist.json",
                              [{"case_id": "case_1", "label": str(label), "modalities": maps}])
    pred = tmp_path / "pred"
    write_image(pred / "case_1.nii.gz", block(slice(4, 8), slice(4, 10), 1))  # 24 voxels, 16 of them true
    return datalist, pred


def test_threshold_baseline_rows_and_the_difference_in_mean_dice(with_maps, tmp_path):
    datalist, pred = with_maps
    result = evaluate_predictions(pred, datalist, tmp_path / "m.csv", baseline="threshold")
    table = pd.read_csv(tmp_path / "m.csv")
    assert list(table["method"]) == ["model", "threshold"]
    assert table.loc[1, "dice"] == 1.0 and table.loc[0, "dice"] == pytest.approx(2 * 16 / 40)
    summary = json.loads((tmp_path / "m_summary.json").read_text())
    assert set(summary["methods"]) == {"model", "threshold"}
    assert summary["dice_difference"]["model_minus_threshold"] == pytest.approx(0.8 - 1.0)
    assert result.ok


def test_threshold_baseline_needs_the_maps(flat):
    truth, pred = flat
    with pytest.raises(ValueError, match="--images"):
        evaluate_predictions(pred, truth, baseline="threshold")


def test_clinical_volumes_of_a_hand_made_case(with_maps, tmp_path):
    datalist, pred = with_maps
    evaluate_predictions(pred, datalist, tmp_path / "m.csv")
    (row,) = pd.read_csv(tmp_path / "m_clinical.csv").to_dict(orient="records")
    assert row["core_ml"] == pytest.approx(24 * 2 / 1000)
    assert row["hypoperfusion_ml"] == pytest.approx(8 * 8 * 3 * 2 / 1000)
    assert row["mismatch_ml"] == pytest.approx((192 - 24) * 2 / 1000)
    assert row["mismatch_ratio"] == pytest.approx(8.0)
    assert row["truth_core_ml"] == pytest.approx(16 * 2 / 1000)


def test_the_mismatch_ratio_of_an_empty_core_is_infinite(with_maps, tmp_path):
    datalist, pred = with_maps
    write_image(pred / "case_1.nii.gz", np.zeros(SHAPE))
    result = evaluate_predictions(pred, datalist)
    assert math.isinf(result.clinical[0]["mismatch_ratio"])


def test_an_evaluation_reads_back_from_its_files(with_maps, tmp_path):
    datalist, pred = with_maps
    result = evaluate_predictions(pred, datalist, tmp_path / "m.csv", baseline="threshold")
    again = load_result(tmp_path / "m.csv")
    assert [(r["case_id"], r["method"], r["dice"]) for r in again.rows] == [
        (r["case_id"], r["method"], pytest.approx(r["dice"])) for r in result.rows]
    (case, prediction), = again.pairs
    assert case.key == "case_1" and case.modality("tmax") and prediction == pred / "case_1.nii.gz"


def test_cli_evaluate_prints_the_table_and_exits_0(with_maps, tmp_path, capsys):
    datalist, pred = with_maps
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--truth", str(datalist), "--out", str(out),
                 "--baseline", "threshold"]) == 0
    printed = capsys.readouterr().out
    assert "dice" in printed and "model minus threshold" in printed
    assert out.is_file() and (tmp_path / "m_summary.json").is_file() and (tmp_path / "m_clinical.csv").is_file()


def test_cli_evaluate_exits_2_when_a_case_fails_but_writes_the_others(flat, tmp_path, capsys):
    truth, pred = flat
    write_image(pred / "case_2.nii.gz", np.zeros((16, 16, 4)))
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "case 'case_2'" in err and str(pred / "case_2.nii.gz") in err and str(truth / "case_2.nii") in err
    assert pd.read_csv(out).set_index("case_id").loc["case_1", "dice"] == 1.0


def test_cli_evaluate_exits_2_on_a_missing_truth(flat, tmp_path, capsys):
    _, pred = flat
    assert main(["evaluate", "--pred", str(pred), "--truth", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "m.csv")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_load_truth_cases_of_a_folder_that_is_no_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither"):
        load_truth_cases(tmp_path / "empty")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    assert main(["synth", str(root), "--cases", "1", "--test-cases", "1", "--seed", "5"]) == 0
    return root


def test_evaluates_submissions_against_a_synthetic_dataset_root(synthetic_root, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    truths = {}
    for split in ("TRAINING", "TESTING_GROUND_TRUTH"):
        ot = next((synthetic_root / split / "case_1").glob("SMIR.*.OT.*"))
        truths[split] = next(ot.glob("*.nii"))
    mtt_train = next((synthetic_root / "TRAINING" / "case_1").glob("SMIR.*.CT_MTT.*")).name.split(".")[-1]
    mtt_test = next((synthetic_root / "TESTING" / "case_1").glob("SMIR.*.CT_MTT.*")).name.split(".")[-1]
    shutil.copy(truths["TRAINING"], pred / f"SMIR.team.{mtt_train}.nii")
    shutil.copy(truths["TESTING_GROUND_TRUTH"], pred / f"SMIR.team.{mtt_test}.nii")
    result = evaluate_predictions(pred, synthetic_root, tmp_path / "m.csv", baseline="threshold")
    rows = model_rows(result)
    assert set(rows) == {"training/case_1", "testing/case_1"}
    assert all(r["dice"] == 1.0 for r in rows.values())
    assert len([r for r in result.rows if r["method"] == "threshold" and r["status"] == "ok"]) == 2
    assert {r["case_id"] for r in result.clinical} == {"training/case_1", "testing/case_1"}
