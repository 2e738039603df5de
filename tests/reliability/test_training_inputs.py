"""train refuses bad input before the bundle starts, with one paragraph naming the datalist, the case and the file
(exit status 2, no traceback, nothing written); a second trainer in the same folder refuses too; a run that fails
leaves no partial outputs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.__main__ import main
from pipeline.data.datalist import load_datalist
from pipeline.planning.bundle_settings import TRAINED_PLANS
from pipeline.training.inputs import check_training_inputs
from pipeline.training.lock import LOCK_NAME, TrainingLock

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "isles_unet"


@pytest.fixture(scope="module")
def datalist(synthetic_datalist) -> Path:
    return synthetic_datalist("training_inputs", cases=4, test_cases=0)


def edited_datalist(datalist: Path, folder: Path, edit) -> Path:
    """A copy of ``datalist`` in ``folder`` (its paths made absolute), changed by ``edit(data)``."""
    data = json.loads(datalist.read_text())
    data["training"] = load_datalist(datalist, "training")
    edit(data)
    path = folder / "edited.json"
    path.write_text(json.dumps(data))
    return path


def train(datalist: Path, output: Path, *extra: str) -> int:
    return main(["train", "--postprocessing", "none", "--bundle", str(BUNDLE), "--datalist", str(datalist), "--output", str(output),
                 "--epochs", "1", "--plans", "none", "--set", "features=[4,4,8,8,8]", "--set", "patch_size=[32,32,2]",
                 "--set", "cache_rate=0.0", *extra])


def refused(capfd, status: int) -> str:
    """The one-paragraph message of a refused command (exit status 2, no traceback)."""
    err = capfd.readouterr().err
    assert status == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_a_fold_out_of_range_is_refused_with_the_valid_range(datalist, tmp_path, capfd):
    err = refused(capfd, train(datalist, tmp_path / "run", "--fold", "5"))
    assert "--fold 5 is out of range" in err and "0..1" in err and str(datalist) in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_malformed_datalist_is_refused_naming_its_path(tmp_path, capfd):
    broken = tmp_path / "datalist.json"
    broken.write_text('{"training": [')
    err = refused(capfd, train(broken, tmp_path / "run"))
    assert str(broken) in err and "not valid JSON" in err
    assert not (tmp_path / "run").exists()


def test_a_training_record_whose_file_is_missing_is_refused_naming_the_case_and_the_file(datalist, tmp_path, capfd):
    def lose_a_label(data):
        data["training"][1]["label"] = str(tmp_path / "gone" / "OT.nii")

    edited = edited_datalist(datalist, tmp_path, lose_a_label)
    case = json.loads(edited.read_text())["training"][1]["case_id"]
    err = refused(capfd, train(edited, tmp_path / "run"))
    assert f"case {case!r}" in err and str(tmp_path / "gone" / "OT.nii") in err and "does not exist" in err
    assert not (tmp_path / "run").exists()


def test_a_fold_without_training_or_validation_cases_is_refused(datalist, tmp_path, capfd):
    def all_in_fold_0(data):
        for record in data["training"]:
            record["fold"] = 0

    edited = edited_datalist(datalist, tmp_path, all_in_fold_0)
    err = refused(capfd, train(edited, tmp_path / "run", "--fold", "0"))
    assert "leaves no case to train on" in err and str(edited) in err
    err = refused(capfd, train(edited, tmp_path / "run", "--fold", "1"))
    assert "has no validation case" in err and str(edited) in err
    assert not (tmp_path / "run").exists()


def test_the_pre_flight_check_accepts_a_good_datalist_and_every_fold(datalist):
    assert check_training_inputs(datalist, 0)["folds"] == 2
    check_training_inputs(datalist, 1)
    check_training_inputs(datalist, "all")


def test_a_second_trainer_in_the_same_folder_is_refused_naming_the_folder_and_the_pid(datalist, tmp_path, capfd):
    models = tmp_path / "run" / "models"
    with TrainingLock(models):  # a live run holds the folder
        err = refused(capfd, train(datalist, tmp_path / "run"))
        assert f"another training run is using {models}" in err and f"PID {os.getpid()}" in err
        assert (models / LOCK_NAME).is_file()  # the holder's lock is untouched
    assert not (models / LOCK_NAME).exists()  # and released by its holder


def test_a_stale_lock_whose_pid_is_dead_is_taken_over(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()  # a PID that no longer runs
    (models / LOCK_NAME).write_text(json.dumps({"pid": gone.pid, "host": os.uname().nodename}))
    with TrainingLock(models) as lock:
        assert lock.taken_over["pid"] == gone.pid
        assert json.loads((models / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (models / LOCK_NAME).exists()


def test_a_train_that_fails_before_any_checkpoint_leaves_no_partial_output(datalist, tmp_path, capfd):
    output = tmp_path / "run"
    status = train(datalist, output, "--plans", str(datalist.parent / "plans.json"),
                   "--set", "network_def#norm=no-such-norm")  # the bundle run starts, then fails
    err = capfd.readouterr().err
    assert status != 0 and "error: training failed" in err and "removed what it had written" in err
    assert not output.exists()  # no trained_plans.json, no models/ or eval/ folder


def test_a_failed_train_puts_back_the_trained_plans_of_the_checkpoints_it_would_resume(datalist, tmp_path, capfd):
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    earlier = b'{"left": "by an earlier run"}\n'
    (models / TRAINED_PLANS).write_bytes(earlier)
    status = train(datalist, tmp_path / "run", "--plans", str(datalist.parent / "plans.json"),
                   "--set", "network_def#norm=no-such-norm")
    assert status != 0
    assert (models / TRAINED_PLANS).read_bytes() == earlier
    assert sorted(p.name for p in models.iterdir()) == [TRAINED_PLANS]
