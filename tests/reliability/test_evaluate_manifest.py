"""evaluate trusts only the files that the run described by the prediction folder's manifest.csv wrote.

A stale prediction of an older run (a case that failed this time, or was dropped) must not be scored beside the
new ones; a case the run failed on is a failed case; a file the manifest lists but that is gone is an error.
A folder without a manifest (masks from another tool) is scored, with a warning.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from pipeline.__main__ import main
from pipeline.manifest import ManifestEntry, manifest_csv

SHAPE = (12, 12, 3)


def write_mask(path: Path, data: np.ndarray, dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=dtype), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def lesion() -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[3:7, 3:7, 1] = 1
    return mask


def write_manifest(folder: Path, rows: list[tuple[str, str, str]], error: str = "") -> Path:
    """``rows``: (case_id, file, status) of one run."""
    entries = [ManifestEntry("run-1", case, file, status, "model.pt", "", "2026-01-01T00:00:00+00:00",
                             error if status == "failed" else "") for case, file, status in rows]
    path = folder / "manifest.csv"
    path.write_text(manifest_csv(entries))
    return path


def setup(tmp_path: Path) -> tuple[Path, Path]:
    """Truth masks for case_1 and case_2, and a prediction folder with both predictions."""
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    for case in ("case_1", "case_2"):
        write_mask(truth / f"{case}.nii.gz", lesion())
        write_mask(pred / f"{case}.nii.gz", lesion())
    return truth, pred


def evaluate(pred: Path, truth: Path, out: Path) -> int:
    return main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(out)])


def statuses(out: Path) -> dict[str, list[str]]:
    table = pd.read_csv(out)
    table = table[table["method"] == "model"]
    found: dict[str, list[str]] = {}
    for case, status in zip(table["case_id"], table["status"]):
        found.setdefault(case, []).append(status)
    return found


def test_a_prediction_the_manifest_does_not_list_is_refused_and_evaluate_exits_2(tmp_path, capsys):
    truth, pred = setup(tmp_path)
    write_manifest(pred, [("case_1", "case_1.nii.gz", "written")])  # case_2.nii.gz is an older run's
    out = tmp_path / "m.csv"
    assert evaluate(pred, truth, out) == 2
    err = capsys.readouterr().err
    assert "case_2.nii.gz" in err and "not written by the run" in err
    assert statuses(out) == {"case_1": ["ok"], "case_2": ["refused", "no_prediction"]}


def test_a_stale_prediction_of_a_case_the_manifest_lists_as_failed_is_refused_and_the_case_is_failed(tmp_path, capsys):
    truth, pred = setup(tmp_path)
    write_manifest(pred, [("case_1", "case_1.nii.gz", "written"), ("case_2", "", "failed")],
                   error="CBF map is all zero")
    out = tmp_path / "m.csv"
    assert evaluate(pred, truth, out) == 2
    err = capsys.readouterr().err
    assert "case 'case_2'" in err and "predict failed on this case" in err and "CBF map is all zero" in err
    assert str(pred / "case_2.nii.gz") in err and "lists case 'case_2' as failed" in err
    assert statuses(out) == {"case_1": ["ok"], "case_2": ["failed", "refused"]}


def test_a_prediction_the_manifest_lists_as_written_but_that_is_missing_is_an_error(tmp_path, capsys):
    truth, pred = setup(tmp_path)
    (pred / "case_2.nii.gz").unlink()
    write_manifest(pred, [("case_1", "case_1.nii.gz", "written"), ("case_2", "case_2.nii.gz", "written")])
    out = tmp_path / "m.csv"
    assert evaluate(pred, truth, out) == 2
    err = capsys.readouterr().err
    assert "case 'case_2'" in err and str(pred / "case_2.nii.gz") in err and "no such prediction file" in err
    assert statuses(out) == {"case_1": ["ok"], "case_2": ["failed"]}


def test_without_a_manifest_every_prediction_is_scored_with_a_warning_that_no_run_is_known(tmp_path, capsys):
    truth, pred = setup(tmp_path)
    out = tmp_path / "m.csv"
    assert evaluate(pred, truth, out) == 0
    printed = capsys.readouterr().out
    assert "warning:" in printed and "no manifest.csv" in printed and "cannot tell which run wrote" in printed
    assert statuses(out) == {"case_1": ["ok"], "case_2": ["ok"]}


def test_the_manifest_failures_csv_probability_maps_and_hidden_files_are_never_predictions(tmp_path, capsys):
    truth, pred = setup(tmp_path)
    (pred / "case_2.nii.gz").unlink()
    write_manifest(pred, [("case_1", "case_1.nii.gz", "written")])
    (pred / "failures.csv").write_text("case_id,error\n")
    np.savez_compressed(pred / "case_1_probabilities.npz", probabilities=lesion().astype(np.float16))
    write_mask(pred / ".case_2.nii.gz.partial-abc123.nii.gz", lesion())  # a killed write's leftover
    write_mask(pred / ".case_2.nii.gz", lesion())
    out = tmp_path / "m.csv"
    assert evaluate(pred, truth, out) == 0, capsys.readouterr().err
    assert statuses(out) == {"case_1": ["ok"], "case_2": ["no_prediction"]}
