"""The command line as users run it: synth -> prepare, error messages and exit codes, nothing half-written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from monai.data import load_decathlon_datalist

from pipeline.__main__ import main


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    assert main(["synth", str(root), "--cases", "4", "--test-cases", "2", "--seed", "3"]) == 0
    return root


def copy_of(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(root, target)
    return target


def test_prepare_reads_the_synthetic_dataset_in_profile_order(synthetic_root, tmp_path, capsys):
    out = tmp_path / "datalist.json"
    assert main(["prepare", "--root", str(synthetic_root), "--out", str(out), "--folds", "2"]) == 0
    printed = capsys.readouterr().out
    assert "layout 'isles2018' (detected)" in printed and "fingerprint (isles2018)" in printed
    training = load_decathlon_datalist(str(out), True, "training")
    assert len(training) == 4
    for record in training:
        names = [Path(p).name for p in record["image"]]
        assert [n.split(".")[4] for n in names] == ["CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax", "CT"]
        assert all(Path(p).is_file() for p in record["image"] + [record["label"]])
    datalist = json.loads(out.read_text())
    # the profile's maps, then its optional CT, which every case has
    assert datalist["channels"] == ["CBF", "CBV", "MTT", "Tmax", "CT"] and datalist["numTest"] == 2
    assert (tmp_path / "fingerprint.csv").is_file() and (tmp_path / "fingerprint.json").is_file()


def test_prepare_leaves_the_optional_ct_out_when_a_case_lacks_it(synthetic_root, tmp_path, capsys):
    root = copy_of(synthetic_root, tmp_path)
    (ct,) = [p for p in (root / "TESTING").glob("*/SMIR.Brain.XX.O.CT.*") if p.is_dir()][:1]
    case = ct.parent.name
    shutil.rmtree(ct)
    out = tmp_path / "datalist.json"
    assert main(["prepare", "--root", str(root), "--out", str(out), "--folds", "2"]) == 0
    assert f"optional channel CT left out: 1 case(s) lack it, e.g. {case}" in capsys.readouterr().out
    assert json.loads(out.read_text())["channels"] == ["CBF", "CBV", "MTT", "Tmax"]


def test_prepare_can_be_rerun_with_the_datalist_beside_the_data(synthetic_root, tmp_path):
    root = copy_of(synthetic_root, tmp_path)
    for _ in range(2):
        assert main(["prepare", "--root", str(root), "--out", str(root / "datalist.json"), "--folds", "2"]) == 0


def test_prepare_with_ct_as_a_fifth_channel(synthetic_root, tmp_path):
    out = tmp_path / "datalist.json"
    assert main(["prepare", "--root", str(synthetic_root), "--out", str(out), "--folds", "2",
                 "--channels", "CBF,CBV,MTT,Tmax,CT"]) == 0
    record = json.loads(out.read_text())["training"][0]
    assert len(record["image"]) == 5 and ".CT." in Path(record["image"][4]).name


def test_missing_modality_fails_naming_case_and_modality_and_writes_nothing(synthetic_root, tmp_path, capsys):
    root = copy_of(synthetic_root, tmp_path)
    for folder in (root / "TRAINING" / "case_2").glob("SMIR.Brain.XX.O.CT_Tmax.*"):
        shutil.rmtree(folder)
    out = tmp_path / "out" / "datalist.json"
    assert main(["prepare", "--root", str(root), "--out", str(out), "--folds", "2"]) == 2
    message = capsys.readouterr().err
    assert "case_2" in message and "Tmax" in message
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_skip_incomplete_leaves_the_case_out_and_lists_it(synthetic_root, tmp_path, capsys):
    root = copy_of(synthetic_root, tmp_path)
    for folder in (root / "TRAINING" / "case_2").glob("SMIR.Brain.XX.O.CT_Tmax.*"):
        shutil.rmtree(folder)
    out = tmp_path / "datalist.json"
    assert main(["prepare", "--root", str(root), "--out", str(out), "--folds", "2", "--skip-incomplete"]) == 0
    assert "case_2" in capsys.readouterr().out
    cases = [r["case_id"] for r in json.loads(out.read_text())["training"]]
    assert "case_2" not in cases and len(cases) == 3
    assert "case_2" in (tmp_path / "skipped_cases.csv").read_text()


def test_a_file_off_the_grid_is_reported_by_case_and_file(synthetic_root, tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    root = copy_of(synthetic_root, tmp_path)
    cbv = next((root / "TRAINING" / "case_1").glob("SMIR.Brain.XX.O.CT_CBV.*/*.nii"))
    img = nib.load(cbv)
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 2), np.uint16), img.affine), str(cbv))
    assert main(["prepare", "--root", str(root), "--out", str(tmp_path / "d.json"), "--folds", "2"]) == 2
    message = capsys.readouterr().err
    assert "case_1" in message and cbv.name in message and "(64, 64, 2)" in message
    assert not (tmp_path / "d.json").exists()


def test_synth_refuses_to_overwrite_an_existing_dataset(synthetic_root, capsys):
    assert main(["synth", str(synthetic_root), "--cases", "1"]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "prepare" in result.stdout and "synth" in result.stdout


def test_prepare_never_overwrites_the_datalist_it_reads(synthetic_root, tmp_path, capsys):
    first = tmp_path / "datalist.json"
    assert main(["prepare", "--root", str(synthetic_root), "--out", str(first), "--folds", "2"]) == 0
    before = first.read_bytes()
    assert main(["prepare", "--root", str(first), "--out", str(first), "--folds", "3"]) == 2
    assert "input" in capsys.readouterr().err
    assert first.read_bytes() == before
    refolded = tmp_path / "refolded.json"
    assert main(["prepare", "--root", str(first), "--out", str(refolded), "--folds", "3"]) == 0
    assert json.loads(refolded.read_text())["folds"] == 3
