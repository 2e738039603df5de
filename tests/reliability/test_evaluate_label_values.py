"""evaluate scores only binary masks: a truth label or a prediction whose values are not {0, 1} (2, 255, 0.5,
several classes) is refused with the values found, the case and the file, and the other cases are still scored.
A datalist whose dataset profile declares ``label_values`` (e.g. ``{255: 1}``) has its truth labels mapped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipeline.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (12, 12, 3)


def write_mask(path: Path, data: np.ndarray, dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=dtype), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def lesion(value: float = 1) -> np.ndarray:
    mask = np.zeros(SHAPE, np.float32)
    mask[3:7, 3:7, 1] = value
    return mask


def classes() -> np.ndarray:
    """Two lesion classes (1 and 2), as a multi-class segmentation writes them."""
    mask = lesion()
    mask[8:10, 8:10, 1] = 2
    return mask


NOT_BINARY = {
    "0.4": (lesion(0.4), np.float32, "0, 0.4"),
    "0.5": (lesion(0.5), np.float32, "0, 0.5"),
    "2": (lesion(2), np.uint8, "0, 2"),
    "255": (lesion(255), np.uint8, "0, 255"),
    "classes": (classes(), np.uint8, "0, 1, 2"),
}


def flat_folders(tmp_path: Path) -> tuple[Path, Path]:
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    for case in ("case_1", "case_2"):
        write_mask(truth / f"{case}.nii.gz", lesion())
        write_mask(pred / f"{case}.nii.gz", lesion())
    return truth, pred


def model_rows(out: Path) -> dict[str, dict]:
    table = pd.read_csv(out, keep_default_na=False)
    return {r["case_id"]: r for r in table.to_dict(orient="records") if r["method"] == "model"}


@pytest.mark.parametrize("name", list(NOT_BINARY))
def test_a_prediction_whose_values_are_not_0_and_1_is_refused_naming_the_values_the_case_and_the_file(
        name, tmp_path, capsys):
    truth, pred = flat_folders(tmp_path)
    data, dtype, shown = NOT_BINARY[name]
    write_mask(pred / "case_2.nii.gz", data, dtype)
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "case 'case_2'" in err and str(pred / "case_2.nii.gz") in err
    assert "not a binary mask" in err and f"values {shown};" in err
    rows = model_rows(out)
    assert rows["case_1"]["status"] == "ok" and rows["case_2"]["status"] == "failed"


@pytest.mark.parametrize("name", list(NOT_BINARY))
def test_a_truth_label_whose_values_are_not_0_and_1_is_refused_naming_the_values_the_case_and_the_file(
        name, tmp_path, capsys):
    truth, pred = flat_folders(tmp_path)
    data, dtype, shown = NOT_BINARY[name]
    write_mask(truth / "case_2.nii.gz", data, dtype)
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "case 'case_2'" in err and str(truth / "case_2.nii.gz") in err
    assert f"the label holds values {shown};" in err
    rows = model_rows(out)
    assert rows["case_1"]["status"] == "ok" and rows["case_2"]["status"] == "failed"


def write_profile_datalist(tmp_path: Path, label_values: dict | None) -> Path:
    """A datalist whose profile (a YAML beside it) declares ``label_values``; its one case is labelled 0/255."""
    profile = (ROOT / "configs" / "datasets" / "isles2018.yaml").read_text()
    if label_values is not None:
        profile += f"\nlabel_values: {json.dumps(label_values)}\n"
    (tmp_path / "data").mkdir(parents=True)
    profile = profile.replace("profile_name: isles2018", "profile_name: masks255")
    (tmp_path / "data" / "masks255.yaml").write_text(profile)
    label = write_mask(tmp_path / "data" / "case_1" / "ot.nii.gz", lesion(255))
    datalist = tmp_path / "data" / "datalist.json"
    datalist.write_text(json.dumps({
        "profile": "masks255.yaml",
        "training": [{"case_id": "case_1", "image": [os.path.relpath(label, datalist.parent)],
                      "label": os.path.relpath(label, datalist.parent)}],
        "testing": [],
    }))
    write_mask(tmp_path / "pred" / "case_1.nii.gz", lesion())
    return datalist


def test_the_datalist_profile_label_values_map_a_0_255_truth_to_0_1(tmp_path, capsys):
    datalist = write_profile_datalist(tmp_path, {"255": 1})
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(datalist), "--out", str(out)]) == 0, \
        capsys.readouterr().err
    assert float(model_rows(out)["case_1"]["dice"]) == 1.0


def test_a_0_255_truth_without_label_values_in_the_profile_is_refused(tmp_path, capsys):
    datalist = write_profile_datalist(tmp_path, None)
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(datalist), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "case 'case_1'" in err and "ot.nii.gz" in err and "255" in err and "label_values" in err


def test_a_bad_case_never_stops_the_others(tmp_path, capsys):
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    for case in ("case_1", "case_2", "case_3", "case_4"):
        write_mask(truth / f"{case}.nii.gz", lesion())
        write_mask(pred / f"{case}.nii.gz", lesion())
    write_mask(pred / "case_1.nii.gz", lesion(0.4), np.float32)  # a soft mask
    (pred / "case_2.nii.gz").write_bytes((pred / "case_2.nii.gz").read_bytes()[:40])  # truncated
    write_mask(truth / "case_3.nii.gz", lesion(2))  # a second class in the truth
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for case in ("case_1", "case_2", "case_3"):
        assert f"case '{case}'" in err
    rows = model_rows(out)
    assert [rows[c]["status"] for c in ("case_1", "case_2", "case_3", "case_4")] == ["failed", "failed", "failed", "ok"]
    assert float(rows["case_4"]["dice"]) == 1.0
