"""Prediction delivery: names per format, headers copied from the reference, the bundle run via `predict`."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pipeline.__main__ import main
from pipeline.errors import CaseError
from pipeline.io import read_geometry, write_mask_like
from pipeline.networks import UNetPlusPlus
from pipeline.predict import SavePredictiond, prediction_filename

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "isles_unetplusplus"
TINY = "[4,4,8,8,16]"


def test_isles2018_submission_is_named_by_the_ct_mtt_smir_id():
    assert prediction_filename("isles2018", "case_3", "/x/CT.nii", smir_id="345568", team_name="TEAM") == "SMIR.TEAM.345568.nii"


def test_isles2018_name_needs_a_smir_id_and_a_dot_free_team_name():
    with pytest.raises(CaseError, match="case_3"):
        prediction_filename("isles2018", "case_3", "/x/CT.nii", smir_id=None, team_name="TEAM")
    with pytest.raises(ValueError, match="team name"):
        prediction_filename("isles2018", "case_3", "/x/CT.nii", smir_id="1", team_name="my.team")


def test_isles2022_name_follows_the_dwi_file():
    dwi = "/d/rawdata/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_dwi.nii.gz"
    assert prediction_filename("isles2022", "sub-strokecase0001", dwi) == "sub-strokecase0001_ses-0001_msk.nii.gz"
    assert prediction_filename("isles2022", "sub-x", dwi, extension=".mha") == "sub-strokecase0001_ses-0001_msk.mha"


def test_nifti_name_is_the_case_id():
    assert prediction_filename("nifti", "case_7") == "case_7.nii.gz"


def quirk_reference(path):
    img = nib.Nifti1Image(np.zeros((6, 5, 2), np.int32), np.eye(4))
    img.set_sform(np.eye(4), code=2)
    img.set_qform(np.eye(4), code=0)
    img.header.set_zooms((0.9, 0.9, 12.0))
    nib.save(img, str(path))
    return path


def test_mask_is_written_with_the_reference_header_quirk_included(tmp_path):
    reference = quirk_reference(tmp_path / "CT.nii")
    mask = np.zeros((6, 5, 2), np.uint8)
    mask[1:3, 2:4, 1] = 1
    out = write_mask_like(mask, reference, tmp_path / "pred.nii")
    written, original = nib.load(out), nib.load(reference)
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), mask)
    for field in ("sform_code", "qform_code", "srow_x", "srow_y", "srow_z", "pixdim", "dim"):
        np.testing.assert_array_equal(written.header[field], original.header[field])


def test_mask_off_the_reference_grid_is_refused(tmp_path):
    reference = quirk_reference(tmp_path / "CT.nii")
    with pytest.raises(ValueError, match="CT.nii"):
        write_mask_like(np.zeros((6, 5, 3), np.uint8), reference, tmp_path / "pred.nii")
    assert not (tmp_path / "pred.nii").exists()


def test_mha_output_takes_the_reference_geometry(tmp_path):
    affine = np.array([[-0.9, 0, 0, 100.0], [0, -0.9, 0, 90.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), affine), str(tmp_path / "dwi.nii.gz"))
    mask = np.zeros((6, 5, 4), np.uint8)
    mask[0, 1, 2] = 1
    out = write_mask_like(mask, tmp_path / "dwi.nii.gz", tmp_path / "msk.mha")
    np.testing.assert_allclose(read_geometry(out).affine, affine, atol=1e-6)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out)))[2, 1, 0] == 1


def test_save_prediction_writes_argmax_mask_and_float16_probabilities(tmp_path):
    reference = quirk_reference(tmp_path / "CT.nii")
    probabilities = torch.zeros(2, 6, 5, 2)
    probabilities[1, 0, 0, 0] = 0.9
    probabilities[0] = 1 - probabilities[1]
    SavePredictiond("pred", tmp_path / "out", "nifti", save_probabilities=True)(
        {"pred": probabilities, "case_id": "case_1", "reference": str(reference)}
    )
    mask = nib.load(tmp_path / "out" / "case_1.nii.gz").get_fdata()
    assert mask.sum() == 1 and mask[0, 0, 0] == 1
    saved = np.load(tmp_path / "out" / "case_1_probabilities.npz", allow_pickle=False)
    assert saved["probabilities"].dtype == np.float16 and float(saved["probabilities"][0, 0, 0]) == pytest.approx(0.9, abs=1e-3)


# --- the bundle run through `python -m pipeline predict` ------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    assert main(["synth", str(root / "data"), "--cases", "1", "--test-cases", "3", "--seed", "11"]) == 0
    assert main(["prepare", "--root", str(root / "data"), "--out", str(root / "datalist.json"), "--folds", "1"]) == 0
    # prepare stacks CBF, CBV, MTT, Tmax and the CT (the profile's optional channel, which every case has)
    net = UNetPlusPlus(spatial_dims=3, in_channels=5, out_channels=2, strides=[[2, 2, 1]] * 4,
                       kernel_sizes=[[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                       features=[4, 4, 8, 8, 16], norm="instance", deep_supervision=True)
    torch.save({"model": net.state_dict()}, root / "model.pt")
    return root


def predict(dataset: Path, *extra: str) -> int:
    return main(["predict", "--in-process", "--bundle", str(BUNDLE), "--checkpoint", str(dataset / "model.pt"),
                 "--set", f"features={TINY}", *extra])


def test_isles2018_submission_files_carry_the_ct_header(dataset, tmp_path, capsys):
    out = tmp_path / "submission"
    assert predict(dataset, "--input", str(dataset / "datalist.json"), "--output", str(out),
                   "--format", "isles2018", "--name", "TEAM") == 0
    assert "-m monai.bundle run --meta_file" in capsys.readouterr().out
    with open(dataset / "data" / "TESTING_GROUND_TRUTH" / "cases.csv") as f:
        cases = list(csv.DictReader(f))
    assert sorted(p.name for p in out.glob("*.nii")) == sorted(f"SMIR.TEAM.{c['mtt_id']}.nii" for c in cases)
    for case in cases:
        written = nib.load(out / f"SMIR.TEAM.{case['mtt_id']}.nii")
        ct = nib.load(next((dataset / "data" / "TESTING" / case["case_id"]).glob("SMIR.Brain.XX.O.CT.*/*.nii")))
        assert written.shape == ct.shape and written.shape[:2] == (256, 256)
        assert written.get_data_dtype() == np.uint8 and set(np.unique(np.asanyarray(written.dataobj))) <= {0, 1}
        np.testing.assert_array_equal(written.affine, ct.affine)
        np.testing.assert_array_equal(written.header["pixdim"], ct.header["pixdim"])


def test_a_bad_case_is_listed_and_the_others_are_written(dataset, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(dataset / "data", data)
    cbv = next((data / "TESTING" / "case_2").glob("SMIR.Brain.XX.O.CT_CBV.*/*.nii"))
    cbv.write_bytes(cbv.read_bytes()[:400])  # truncated file
    out = tmp_path / "pred"
    assert predict(dataset, "--input", str(data), "--output", str(out)) == 2
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case_1.nii.gz", "case_3.nii.gz"]
    failures = (out / "failures.csv").read_text()
    assert "case_2" in failures and cbv.name in failures
    assert "case_2" in capsys.readouterr().err
    # results already there: refused without --overwrite, nothing touched
    before = (out / "case_1.nii.gz").stat().st_mtime_ns
    assert predict(dataset, "--input", str(data), "--output", str(out)) == 2
    assert (out / "case_1.nii.gz").stat().st_mtime_ns == before


def test_the_manifest_times_each_stage_of_each_case(dataset, tmp_path, capsys):
    from pipeline.manifest import read_manifest

    out = tmp_path / "pred"
    started = time.perf_counter()
    assert predict(dataset, "--input", str(dataset / "datalist.json"), "--output", str(out)) == 0
    elapsed = time.perf_counter() - started
    entries = read_manifest(out)
    assert len(entries) == 3
    for entry in entries:
        stages = [float(entry.load_s), float(entry.network_s), float(entry.postprocess_s)]
        assert all(s > 0 for s in stages) and sum(stages) < elapsed
    assert "predict: seconds per case: loading and preprocessing" in capsys.readouterr().out


def test_a_folder_is_predicted_with_the_channels_the_model_was_trained_on(dataset, tmp_path):
    """A model trained without the CT: its trained plans say so, and predict stacks those four maps of each case of
    a folder, not the five that prepare would choose for the folder."""
    from pipeline.planning.plans import load_plans, write_plans

    assert main(["prepare", "--root", str(dataset / "data"), "--out", str(tmp_path / "four.json"), "--folds", "1",
                 "--channels", "CBF,CBV,MTT,Tmax"]) == 0
    plans = load_plans(tmp_path / "plans.json")
    plans["features"] = [4] * (len(plans["strides"]) + 1)
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    write_plans(plans, models / "trained_plans.json")
    net = UNetPlusPlus(spatial_dims=3, in_channels=4, out_channels=2, strides=plans["strides"],
                       kernel_sizes=plans["kernel_sizes"], features=plans["features"], norm="instance",
                       deep_supervision=True)
    torch.save({"model": net.state_dict()}, models / "last.pt")
    out = tmp_path / "pred"
    assert main(["predict", "--in-process", "--bundle", str(BUNDLE), "--model", str(tmp_path / "run"), "--input",
                 str(dataset / "data"), "--output", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case_1.nii.gz", "case_2.nii.gz", "case_3.nii.gz"]


def test_isles2022_prediction_lies_on_the_dwi_grid_with_flair_resampled(tmp_path):
    session = tmp_path / "isles22" / "rawdata" / "sub-strokecase0001" / "ses-0001"
    session.mkdir(parents=True)
    rng = np.random.default_rng(0)
    dwi_affine = np.array([[-2.0, 0, 0, 20.0], [0, 2.0, 0, -20.0], [0, 0, 2.0, -12.0], [0, 0, 0, 1]])
    flair_affine = np.array([[-1.0, 0, 0, 20.0], [0, 1.0, 0, -20.0], [0, 0, 4.0, -12.0], [0, 0, 0, 1]])
    for name, shape, affine in (("dwi", (20, 18, 12), dwi_affine), ("adc", (20, 18, 12), dwi_affine),
                                ("flair", (40, 36, 6), flair_affine)):
        nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32) + 1, affine),
                 str(session / f"sub-strokecase0001_ses-0001_{name}.nii.gz"))
    net = UNetPlusPlus(spatial_dims=3, in_channels=3, out_channels=2, strides=[[2, 2, 1]] * 4,
                       features=[4, 4, 8, 8, 16], norm="instance")
    torch.save({"model": net.state_dict()}, tmp_path / "model.pt")
    out = tmp_path / "pred"
    assert main(["predict", "--in-process", "--bundle", str(BUNDLE), "--checkpoint", str(tmp_path / "model.pt"),
                 "--input", str(tmp_path / "isles22"), "--output", str(out), "--format", "isles2022",
                 "--set", f"features={TINY}",
                 "--set", "kernel_sizes=3"]) == 0
    written = nib.load(out / "sub-strokecase0001_ses-0001_msk.nii.gz")
    assert written.shape == (20, 18, 12) and written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(written.affine, dwi_affine)


def test_a_folder_without_the_models_channels_is_refused_naming_the_folder_and_the_channels(dataset, tmp_path, capsys):
    from pipeline.planning.plans import load_plans, write_plans

    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    write_plans({**load_plans(dataset / "plans.json"), "channels": ["DWI", "ADC"]}, models / "trained_plans.json")
    torch.save({"model": {}}, models / "last.pt")
    out = tmp_path / "pred"
    status = main(["predict", "--bundle", str(BUNDLE), "--model", str(tmp_path / "run"), "--input",
                   str(dataset / "data"), "--output", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and not out.exists() and "Traceback" not in err
    assert str(dataset / "data") in err and "trained on the channels DWI, ADC" in err


def test_the_predict_command_imports_no_monai_before_it_starts_the_bundle_run():
    # the parent's check and the bundle process import MONAI side by side (pipeline.predict.command)
    import subprocess
    import sys

    code = ("import sys, pipeline.predict.command, pipeline.cli; "
            "print(sorted(m for m in ('monai', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_name_of_pipeline_predict_is_importable():
    import ast
    import inspect

    import pipeline.predict

    for name in pipeline.predict.__all__:
        assert getattr(pipeline.predict, name) is not None
    # the lazy table and the names listed for type checkers and the export's vendoring are the same
    tree = ast.parse(inspect.getsource(pipeline.predict))
    listed = {(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
              for alias in node.names if node.module and node.module.startswith("pipeline.")}
    assert listed == {(module, name) for name, module in pipeline.predict._SOURCES.items()}
    assert {"SavePredictiond", "run_predict", "EnsembleCheckpointLoader"} <= set(dir(pipeline.predict))


def test_in_process_cannot_shard_over_processes(dataset, tmp_path, capsys):
    assert predict(dataset, "--input", str(dataset / "datalist.json"), "--output", str(tmp_path / "out"),
                   "--nproc", "2") == 2
    assert "cannot run in this process" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_an_in_process_run_leaves_the_logging_configuration_as_it_was(dataset, tmp_path):
    import logging

    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    assert predict(dataset, "--input", str(dataset / "datalist.json"), "--output", str(tmp_path / "out")) == 0
    assert (list(root.handlers), root.level) == before  # the bundle's logging.conf configured it during the run
