"""evaluate pairs a prediction only with the truth of its own case and split, and says so when nothing pairs.

ISLES 2018 training and test cases share ids (``case_1``...): a test prediction must never be scored against the
label of the training case of the same id. When nothing can be paired and scored, evaluate exits 2 with a message
naming the folder it searched, the file names it looked for and what it found.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from pipeline.__main__ import main
from pipeline.manifest import ManifestEntry, manifest_csv

SHAPE = (12, 12, 3)


def write_mask(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.uint8), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def lesion(x: int) -> np.ndarray:
    """A lesion whose place tells the cases apart (no overlap between different ``x``)."""
    mask = np.zeros(SHAPE, np.uint8)
    mask[x:x + 2, 3:7, 1] = 1
    return mask


def record(folder: Path, base: Path, case: str, split: str, x: int | None) -> dict:
    """A datalist record with an image, and a label (lesion at ``x``) unless ``x`` is None."""
    image = write_mask(folder / split / case / "cbf.nii.gz", lesion(0))
    entry = {"case_id": case, "split": split, "image": [os.path.relpath(image, base)],
             "modalities": {"CBF": os.path.relpath(image, base)}}
    if x is not None:
        entry["label"] = os.path.relpath(write_mask(folder / split / case / "ot.nii.gz", lesion(x)), base)
    return entry


def write_datalist(tmp_path: Path, training: dict[str, int | None], testing: dict[str, int | None]) -> Path:
    folder = tmp_path / "data"
    datalist = folder / "datalist.json"
    datalist.parent.mkdir(parents=True, exist_ok=True)
    datalist.write_text(json.dumps({
        "training": [record(folder, folder, c, "training", x) for c, x in training.items()],
        "testing": [record(folder, folder, c, "testing", x) for c, x in testing.items()],
    }))
    return datalist


def evaluate(pred: Path, truth: Path, out: Path) -> int:
    return main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(out)])


def model_rows(out: Path) -> dict[str, dict]:
    table = pd.read_csv(out, keep_default_na=False)
    return {r["case_id"]: r for r in table.to_dict(orient="records") if r["method"] == "model"}


def test_nothing_paired_exits_2_naming_the_folder_the_name_patterns_and_what_was_found(tmp_path, capsys):
    write_mask(tmp_path / "truth" / "case_1.nii.gz", lesion(2))
    write_mask(tmp_path / "truth" / "case_2.nii.gz", lesion(2))
    write_mask(tmp_path / "pred" / "patient_7.nii.gz", lesion(2))
    assert evaluate(tmp_path / "pred", tmp_path / "truth", tmp_path / "m.csv") == 2
    err = capsys.readouterr().err
    assert "nothing to score" in err and str(tmp_path / "pred") in err
    assert "<case_id>.nii.gz" in err and "SMIR.<name>.<ID>.nii" in err and "_msk.nii.gz" in err
    assert "found 1 prediction file" in err and "2 labelled case(s)" in err and "patient_7" in err


def test_an_empty_prediction_folder_exits_2_naming_what_was_looked_for(tmp_path, capsys):
    write_mask(tmp_path / "truth" / "case_1.nii.gz", lesion(2))
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "case_1_probabilities.npz").write_bytes(b"")
    assert evaluate(tmp_path / "pred", tmp_path / "truth", tmp_path / "m.csv") == 2
    err = capsys.readouterr().err
    assert "found 0 prediction file" in err and "1 labelled case(s)" in err and "<case_id>.nii.gz" in err


def test_a_test_prediction_is_never_scored_against_the_training_case_of_the_same_id(tmp_path, capsys):
    # the test case_1 has no label; the training case_1 has one: the test prediction is not the training case's
    datalist = write_datalist(tmp_path, {"case_1": 2, "case_2": 5}, {"case_1": None})
    write_mask(tmp_path / "pred" / "case_1.nii.gz", lesion(2))
    assert evaluate(tmp_path / "pred", datalist, tmp_path / "m.csv") == 2
    err = capsys.readouterr().err
    assert "training record 'case_1'" in err and "testing record 'case_1'" in err
    assert str(tmp_path / "data" / "training" / "case_1" / "ot.nii.gz") in err
    assert not (tmp_path / "m.csv").exists()  # nothing was scored


def test_test_predictions_pair_with_the_test_labels_when_their_ids_tell_the_split(tmp_path, capsys):
    # case_3 is a test case only: the run predicted the test split, so case_1 is the test case_1
    datalist = write_datalist(tmp_path, {"case_1": 2, "case_2": 5}, {"case_1": 8, "case_3": 5})
    write_mask(tmp_path / "pred" / "case_1.nii.gz", lesion(8))
    write_mask(tmp_path / "pred" / "case_3.nii.gz", lesion(5))
    assert evaluate(tmp_path / "pred", datalist, tmp_path / "m.csv") == 0, capsys.readouterr().err
    rows = model_rows(tmp_path / "m.csv")
    assert float(rows["testing/case_1"]["dice"]) == 1.0 and float(rows["case_3"]["dice"]) == 1.0
    assert rows["training/case_1"]["status"] == "no_prediction"


def test_training_predictions_pair_with_the_training_labels_when_their_ids_tell_the_split(tmp_path, capsys):
    datalist = write_datalist(tmp_path, {"case_1": 2, "case_2": 5}, {"case_1": None})
    write_mask(tmp_path / "pred" / "case_1.nii.gz", lesion(2))
    write_mask(tmp_path / "pred" / "case_2.nii.gz", lesion(5))
    assert evaluate(tmp_path / "pred", datalist, tmp_path / "m.csv") == 0, capsys.readouterr().err
    rows = model_rows(tmp_path / "m.csv")
    assert float(rows["case_1"]["dice"]) == 1.0 and float(rows["case_2"]["dice"]) == 1.0


def test_the_manifest_cases_tell_the_split_of_the_run(tmp_path, capsys):
    # the run predicted the test split (case_3 failed there, and only the test split has a case_3)
    datalist = write_datalist(tmp_path, {"case_1": 2, "case_2": 5}, {"case_1": 8, "case_3": 5})
    write_mask(tmp_path / "pred" / "case_1.nii.gz", lesion(8))
    (tmp_path / "pred" / "manifest.csv").write_text(manifest_csv([
        ManifestEntry("run-1", "case_1", "case_1.nii.gz", "written"),
        ManifestEntry("run-1", "case_3", "", "failed", error="unreadable CBF"),
    ]))
    assert evaluate(tmp_path / "pred", datalist, tmp_path / "m.csv") == 2  # case_3 failed
    rows = model_rows(tmp_path / "m.csv")
    assert float(rows["testing/case_1"]["dice"]) == 1.0 and rows["case_3"]["status"] == "failed"
    assert "unreadable CBF" in capsys.readouterr().err
