"""predict never loses, mixes up or misplaces a patient's result.

Every name taken from case data lands as one plain file name under --output, or the run refuses before any
work; two cases never share an output file; an output folder holds one run's results and its manifest; a bad
checkpoint or record is refused before inference with a message naming the file.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import reliability_helpers
from reliability_helpers import tiny_network
from pipeline.__main__ import main
from pipeline.io import is_partial_file


def predict_args(dataset: Path, *extra: str) -> list[str]:
    """``predict``'s argv, the bundle run in this process: these tests are about inputs and outputs, not processes."""
    return reliability_helpers.predict_args(dataset, *extra, in_process=True)
from pipeline.manifest import read_manifest


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def edited_datalist(dataset: Path, tmp_path: Path, edit) -> Path:
    """A copy of the dataset's datalist beside it (paths stay valid) with ``edit(testing_records)`` applied."""
    datalist = json.loads((dataset / "datalist.json").read_text())
    edit(datalist["testing"])
    path = dataset / f"datalist_{tmp_path.name}.json"
    path.write_text(json.dumps(datalist))
    return path


def test_records_without_case_id_are_refused_before_any_output(small_dataset, tmp_path, capfd):
    def drop_ids(records):
        for record in records:
            record.pop("case_id")

    datalist = edited_datalist(small_dataset, tmp_path, drop_ids)
    out = tmp_path / "pred"
    assert main(predict_args(small_dataset, "--input", str(datalist), "--output", str(out))) == 2
    err = capfd.readouterr().err
    assert "record 0" in err and "case_id" in err and "Traceback" not in err
    assert files_under(out) == []


def test_two_records_with_one_case_id_are_refused_naming_both(small_dataset, tmp_path, capfd):
    def duplicate(records):
        records[2]["case_id"] = records[0]["case_id"]

    datalist = edited_datalist(small_dataset, tmp_path, duplicate)
    out = tmp_path / "pred"
    assert main(predict_args(small_dataset, "--input", str(datalist), "--output", str(out))) == 2
    err = capfd.readouterr().err
    assert "records 0 and 2" in err and "case_1" in err
    assert files_under(out) == []


@pytest.mark.parametrize("case_id", ["../../escaped", "/ABSOLUTE/escaped", "nested/escaped", "..", ".hidden", "bad\nname"])
def test_a_case_id_that_is_not_a_plain_name_is_refused_and_nothing_is_written_outside(small_dataset, tmp_path, case_id,
                                                                                      capfd):
    case_id = case_id.replace("/ABSOLUTE", str(tmp_path / "abs"))

    def rename(records):
        records[1]["case_id"] = case_id

    datalist = edited_datalist(small_dataset, tmp_path, rename)
    before = tree(tmp_path)
    out = tmp_path / "deep" / "pred"
    assert main(predict_args(small_dataset, "--input", str(datalist), "--output", str(out))) == 2
    assert "case_id" in capfd.readouterr().err
    assert tree(tmp_path) == before  # no prediction, no stray folder, anywhere


def test_an_isles2018_smir_id_with_a_path_is_refused(small_dataset, tmp_path, capfd):
    def rename(records):
        records[0]["smir_id"] = "123/../../x"

    datalist = edited_datalist(small_dataset, tmp_path, rename)
    out = tmp_path / "pred"
    assert main(predict_args(small_dataset, "--input", str(datalist), "--output", str(out),
                             "--format", "isles2018", "--name", "TEAM")) == 2
    err = capfd.readouterr().err
    assert "smir_id" in err and "case_1" in err
    assert files_under(out) == []


def test_a_team_name_with_a_path_is_refused(small_dataset, tmp_path):
    out = tmp_path / "pred"
    assert main(predict_args(small_dataset, "--input", str(small_dataset / "datalist.json"), "--output", str(out),
                             "--format", "isles2018", "--name", "../TEAM")) == 2
    assert files_under(out) == []


def test_a_record_whose_channels_contradict_its_modality_map_is_refused(small_dataset, tmp_path, capfd):
    def swap(records):
        records[0]["image"][0], records[0]["image"][1] = records[0]["image"][1], records[0]["image"][0]

    datalist = edited_datalist(small_dataset, tmp_path, swap)
    out = tmp_path / "pred"
    assert main(predict_args(small_dataset, "--input", str(datalist), "--output", str(out))) == 2
    err = capfd.readouterr().err
    assert "case_1" in err and "CT_CBF" in err and "CT_CBV" in err and "modality map" in err
    assert files_under(out) == []


def test_overwrite_leaves_only_this_runs_results_and_a_manifest(small_dataset, tmp_path, capfd):
    data = tmp_path / "data"
    shutil.copytree(small_dataset / "data", data)
    out = tmp_path / "pred"
    assert main(predict_args(small_dataset, "--input", str(data), "--output", str(out))) == 0
    first = read_manifest(out)
    assert sorted(e.case_id for e in first if e.status == "written") == ["case_1", "case_2", "case_3"]
    assert all(e.checkpoint.endswith("model.pt") and len(e.checkpoint_sha256) == 64 for e in first)
    cbv = next((data / "TESTING" / "case_2").glob("SMIR.Brain.XX.O.CT_CBV.*/*.nii"))
    cbv.write_bytes(cbv.read_bytes()[:400])  # case_2 now fails
    assert main(predict_args(small_dataset, "--input", str(data), "--output", str(out), "--overwrite")) == 2
    assert sorted(p.name for p in out.iterdir()) == ["case_1.nii.gz", "case_3.nii.gz", "failures.csv", "manifest.csv"]
    second = {e.case_id: e for e in read_manifest(out)}
    assert second["case_2"].status == "failed" and cbv.name in second["case_2"].error
    assert {e.run_id for e in second.values()} != {e.run_id for e in first}
    assert "case_2" in capfd.readouterr().err


def test_a_partial_file_of_a_killed_write_is_not_a_result_and_is_cleared(small_dataset, tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    partial = out / ".case_1.nii.gz.partial-abcd1234.nii.gz"
    partial.write_bytes(b"")
    assert main(predict_args(small_dataset, "--input", str(small_dataset / "datalist.json"), "--output", str(out))) == 0
    assert not partial.exists()
    assert not any(is_partial_file(p) for p in files_under(out))
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case_1.nii.gz", "case_2.nii.gz", "case_3.nii.gz"]


def test_a_truncated_checkpoint_is_refused_before_inference(small_dataset, tmp_path, capfd):
    checkpoint = tmp_path / "truncated.pt"
    checkpoint.write_bytes((small_dataset / "model.pt").read_bytes()[:2000])
    out = tmp_path / "pred"
    args = predict_args(small_dataset, "--input", str(small_dataset / "datalist.json"), "--output", str(out))
    args[args.index("--checkpoint") + 1] = str(checkpoint)
    assert main(args) == 2
    err = capfd.readouterr().err
    assert str(checkpoint) in err and "truncated" in err and "Traceback" not in err
    # checked while the bundle process starts; that process is stopped, and the run leaves no folder behind
    assert not out.exists()


def test_a_refused_checkpoint_leaves_earlier_results_as_they_were(small_dataset, tmp_path, capfd):
    out = tmp_path / "pred"
    out.mkdir()
    earlier = out / "case_1.nii.gz"
    earlier.write_bytes(b"an earlier run's mask")
    checkpoint = tmp_path / "truncated.pt"
    checkpoint.write_bytes((small_dataset / "model.pt").read_bytes()[:2000])
    args = predict_args(small_dataset, "--input", str(small_dataset / "datalist.json"), "--output", str(out),
                        "--overwrite")
    args[args.index("--checkpoint") + 1] = str(checkpoint)
    assert main(args) == 2
    assert str(checkpoint) in capfd.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["case_1.nii.gz"]  # no staging folder, nothing replaced
    assert earlier.read_bytes() == b"an earlier run's mask"


@pytest.mark.parametrize("kind", ["channels", "widths"])
def test_a_checkpoint_of_another_network_is_refused_before_inference(small_dataset, tmp_path, kind, capfd):
    network = tiny_network(in_channels=4) if kind == "channels" else tiny_network(features=[8, 8, 16, 16, 32])
    checkpoint = tmp_path / "other.pt"
    torch.save({"model": network.state_dict()}, checkpoint)
    out = tmp_path / "pred"
    args = predict_args(small_dataset, "--input", str(small_dataset / "datalist.json"), "--output", str(out))
    args[args.index("--checkpoint") + 1] = str(checkpoint)
    assert main(args) == 2
    err = capfd.readouterr().err
    assert str(checkpoint) in err
    assert ("4 input channel(s)" in err and "5" in err) if kind == "channels" else "another shape" in err
    assert not out.exists()


def test_an_empty_channel_is_warned_about_and_strict_fails_that_case(small_dataset, tmp_path, capfd):
    data = tmp_path / "data"
    shutil.copytree(small_dataset / "data", data)
    tmax = next((data / "TESTING" / "case_1").glob("SMIR.Brain.XX.O.CT_Tmax.*/*.nii"))
    image = nib.load(str(tmax))
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.float64), image.affine, image.header), str(tmax))
    out = tmp_path / "pred"
    # in the bundle's own process: the warning is what that process prints on stderr
    assert main(reliability_helpers.predict_args(small_dataset, "--input", str(data), "--output", str(out))) == 0
    err = capfd.readouterr().err
    assert "case_1" in err and tmax.name in err and "Tmax is empty" in err
    strict = tmp_path / "strict"
    assert main(predict_args(small_dataset, "--input", str(data), "--output", str(strict), "--strict")) == 2
    rows = {row["case_id"]: row for row in csv.DictReader(open(strict / "failures.csv"))}
    assert list(rows) == ["case_1"] and "Tmax" in rows["case_1"]["error"]
    assert sorted(p.name for p in strict.glob("*.nii.gz")) == ["case_2.nii.gz", "case_3.nii.gz"]


@pytest.mark.parametrize("code, bitpix, kind", [(1, 1, "bool"), (32, 64, "complex")])
def test_a_channel_of_an_unsupported_datatype_fails_that_case_only(small_dataset, tmp_path, code, bitpix, kind, capfd):
    import struct

    data = tmp_path / "data"
    shutil.copytree(small_dataset / "data", data)
    cbf = next((data / "TESTING" / "case_3").glob("SMIR.Brain.XX.O.CT_CBF.*/*.nii"))
    raw = bytearray(cbf.read_bytes())
    raw[70:74] = struct.pack("<hh", code, bitpix)  # the datatype another tool wrote; nibabel writes neither
    cbf.write_bytes(bytes(raw))
    out = tmp_path / "pred"
    assert main(predict_args(small_dataset, "--input", str(data), "--output", str(out))) == 2
    rows = {row["case_id"]: row for row in csv.DictReader(open(out / "failures.csv"))}
    assert list(rows) == ["case_3"] and cbf.name in rows["case_3"]["error"]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case_1.nii.gz", "case_2.nii.gz"]
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("content", ['{"testing": [', "[1, 2]", "\x00\xff"])
def test_a_malformed_datalist_is_refused_naming_it(small_dataset, tmp_path, content, capfd):
    datalist = tmp_path / "broken.json"
    datalist.write_bytes(content.encode("latin-1"))
    out = tmp_path / "pred"
    assert main(predict_args(small_dataset, "--input", str(datalist), "--output", str(out))) == 2
    err = capfd.readouterr().err
    assert str(datalist) in err and "Traceback" not in err
    assert files_under(out) == []


def test_predict_with_tta_writes_every_case_and_differs_from_one_pass(small_dataset, tmp_path, capfd):
    datalist = str(small_dataset / "datalist.json")
    plain, tta = tmp_path / "plain", tmp_path / "tta"
    assert main(predict_args(small_dataset, "--input", datalist, "--output", str(plain), "--probabilities")) == 0
    assert main(predict_args(small_dataset, "--input", datalist, "--output", str(tta), "--probabilities",
                             "--tta")) == 0
    assert "--tta true" in capfd.readouterr().out.lower()
    entries = read_manifest(tta)
    assert entries and all(e.status == "written" for e in entries)
    assert sorted(e.file for e in entries) == sorted(e.file for e in read_manifest(plain))
    for entry in entries:
        assert nib.load(str(tta / entry.file)).shape == nib.load(str(plain / entry.file)).shape
    maps = sorted(p.name for p in plain.glob("*_probabilities.npz"))
    assert maps and maps == sorted(p.name for p in tta.glob("*_probabilities.npz"))
    differs = False
    for name in maps:
        a, b = np.load(plain / name)["probabilities"], np.load(tta / name)["probabilities"]
        assert a.shape == b.shape and np.all((b >= 0) & (b <= 1.001))
        differs |= not np.allclose(a, b, atol=1e-3)
    assert differs, "TTA gave the same probabilities as one pass"
