"""train under faults: killed with ``kill -9``, stopped with SIGTERM, out of disk space while saving a checkpoint.

Every checkpoint left behind is complete (it loads with ``torch.load(weights_only=True)``), no temporary file
outlives the fault, and the same command resumes from the last saved epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.__main__ import main
from pipeline.io import is_partial_file
from reliability_helpers import fill

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "isles_unet"
# a network and grid small enough for an epoch of a fraction of a second on one CPU core: 4 mm voxels in-plane
TINY = ["--plans", "none", "--set", "features=[4,4,8,8,8]", "--set", "patch_size=[32,32,2]", "--set", "pixdim=[4.0,4.0,0.0]",
        "--set", "val_interval=1", "--set", "batch_size=2", "--set", "samples_per_case=1", "--set", "cache_rate=0.0"]
EPOCHS = 8  # enough epochs (a few seconds) that a run is still training when the test stops it


@pytest.fixture(scope="module")
def datalist(synthetic_datalist) -> Path:
    return synthetic_datalist("training_faults", cases=4, test_cases=0)


def train_args(datalist: Path, output: Path, epochs: int = EPOCHS, *extra: str) -> list[str]:
    return ["train", "--postprocessing", "none", "--bundle", str(BUNDLE), "--datalist", str(datalist), "--fold", "0", "--epochs", str(epochs),
            "--output", str(output), *TINY, *extra]


def spawn_train(args: list[str], logs: Path) -> subprocess.Popen:
    """``python -m pipeline train`` in its own session (so that the test can signal the wrapper and its bundle run),
    its output in ``logs/out.txt`` and ``logs/err.txt``."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(logs / "out.txt", "w") as out, open(logs / "err.txt", "w") as err:
        return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=str(logs), env=env,
                                stdout=out, stderr=err, start_new_session=True)


def wait_for(path: Path, process: subprocess.Popen, logs: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{path.name} never appeared (exit {process.poll()}):\n{(logs / 'err.txt').read_text()[-3000:]}")
        time.sleep(0.02)


def stop_group(process: subprocess.Popen) -> None:
    """Leave no process of a test behind, whatever happened."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def saved_iteration(checkpoint: Path) -> tuple[int, int]:
    trainer = torch.load(checkpoint, weights_only=True)["trainer"]
    return trainer["iteration"], trainer["epoch_length"]


def assert_every_checkpoint_loads(models: Path, temporaries: bool = False) -> None:
    """Every checkpoint file is complete (a truncated one does not load); with ``temporaries=False``, no temporary
    file (``.<name>.partial-...``, ignite's ``tmpXXXXXXXX``) is left beside them."""
    files = sorted(p for p in models.glob("*.pt") if not p.name.startswith("."))
    assert files
    for path in files:
        torch.load(path, weights_only=True)
    if not temporaries:
        assert not [p.name for p in models.iterdir() if is_partial_file(p) or p.name.startswith("tmp")]


def test_kill_9_after_a_checkpoint_then_the_same_command_resumes_from_the_saved_epoch(datalist, tmp_path, capfd):
    output = tmp_path / "run"
    models = output / "models"
    args = train_args(datalist, output)
    process = spawn_train(args, tmp_path / "logs")
    try:
        wait_for(models / "checkpoint_epoch=1.pt", process, tmp_path / "logs")
        os.killpg(process.pid, signal.SIGKILL)  # the wrapper and its bundle run, at once, mid-training
        process.wait()
    finally:
        stop_group(process)
    assert_every_checkpoint_loads(models, temporaries=True)  # a kill mid-save may leave a partial file: the rerun clears it
    iteration, epoch_length = saved_iteration(max(models.glob("checkpoint_epoch=*.pt"), key=lambda p: p.stat().st_mtime_ns))
    saved_epoch = iteration // epoch_length
    assert 1 <= saved_epoch < EPOCHS

    capfd.readouterr()
    assert main(args) == 0  # the same command
    log = capfd.readouterr()
    printed = log.out + log.err
    assert f"took over the stale lock of PID {process.pid}" in printed  # the killed run's lock
    assert "Restored all variables from" in printed
    assert f"Epoch: {saved_epoch + 1}/{EPOCHS}," in printed and f"Epoch: {saved_epoch}/{EPOCHS}," not in printed
    assert saved_iteration(models / "last.pt") == (EPOCHS * epoch_length, epoch_length)
    assert_every_checkpoint_loads(models)
    assert not (models / ".train.lock").exists()


def test_sigterm_stops_training_cleanly_and_the_rerun_resumes(datalist, tmp_path, capfd):
    output = tmp_path / "run"
    models = output / "models"
    args = train_args(datalist, output)
    process = spawn_train(args, tmp_path / "logs")
    try:
        wait_for(models / "checkpoint_epoch=1.pt", process, tmp_path / "logs")
        child = json.loads((models / ".train.lock").read_text())["child_pid"]  # the bundle run
        os.kill(process.pid, signal.SIGTERM)  # to `python -m pipeline train` only, as a scheduler would
        process.wait(timeout=120)
    finally:
        stop_group(process)
    out, err = (tmp_path / "logs" / "out.txt").read_text(), (tmp_path / "logs" / "err.txt").read_text()
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM received: stopping after the current iteration" in out  # the bundle run's log
    assert "train: stopped by SIGTERM" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the bundle run stopped with the wrapper: no trainer goes on alone
    assert not (models / ".train.lock").exists()
    assert_every_checkpoint_loads(models)
    iteration, epoch_length = saved_iteration(models / "last.pt")  # the final checkpoint of the stopped run
    assert 1 <= iteration < EPOCHS * epoch_length

    capfd.readouterr()
    assert main(args) == 0
    log = capfd.readouterr()
    assert f"Restored all variables from {models / 'last.pt'}" in log.out + log.err
    assert saved_iteration(models / "last.pt") == (EPOCHS * epoch_length, epoch_length)


def test_a_full_disk_while_saving_a_checkpoint_gives_a_message_and_keeps_the_previous_one(
        datalist, tmp_path, small_disk, capfd):
    models = small_disk / "models"  # the checkpoints on the small disk, the logs elsewhere
    args = ["--set", f"ckpt_dir={models}"]
    assert main(train_args(datalist, tmp_path / "run", 1, *args)) == 0
    before = {p.name: p.read_bytes() for p in models.glob("*.pt")}
    assert sorted(before) == ["checkpoint_epoch=1.pt", "last.pt", "model.pt"]
    fill(small_disk / "filler")

    capfd.readouterr()
    assert main(train_args(datalist, tmp_path / "run", 2, *args)) == 1
    err = capfd.readouterr().err
    assert "error: could not write the checkpoint" in err and "the disk is full" in err
    assert "the checkpoints already in" in err and "run the same command again to resume" in err
    assert {p.name: p.read_bytes() for p in models.glob("*.pt")} == before  # intact
    assert_every_checkpoint_loads(models)  # and no truncated or temporary file beside them


def test_a_stale_ignite_temporary_filling_the_disk_is_cleared_and_the_run_resumes(
        datalist, tmp_path, small_disk, capfd):
    models = small_disk / "models"
    args = ["--set", f"ckpt_dir={models}"]
    assert main(train_args(datalist, tmp_path / "run", 1, *args)) == 0
    # what ignite's atomic DiskSaver leaves when killed, or stopped by a full disk, mid-save: it keeps the disk full
    fill(models / "tmpk2v9x_q1")
    (models / ".last.pt.partial-ab12cd.pt").touch()  # and a partial file of pipeline.io.atomic_path

    capfd.readouterr()
    assert main(train_args(datalist, tmp_path / "run", 2, *args)) == 0
    log = capfd.readouterr()
    assert "removed 2 temporary file(s) that an interrupted run left" in log.out
    assert "Restored all variables from" in log.out + log.err
    assert saved_iteration(models / "last.pt")[0] == 2 * saved_iteration(models / "last.pt")[1]
    assert_every_checkpoint_loads(models)
