"""predict under faults: killed mid-run, or out of disk space. No half-written prediction is ever left under a
result's name, the earlier run's results stay as they were, and the rerun completes the set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from reliability_helpers import fill, predict_args
from pipeline.__main__ import main
from pipeline.io import is_partial_file
from pipeline.manifest import read_manifest

CASES = ["case_1.nii.gz", "case_2.nii.gz", "case_3.nii.gz"]


def results(folder: Path) -> dict[str, bytes]:
    """The visible files of an output folder (what a user or evaluate sees), with their bytes."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def test_kill_9_during_predict_leaves_the_earlier_results_and_the_rerun_completes(small_dataset, tmp_path):
    out = tmp_path / "pred"
    args = predict_args(small_dataset, "--input", str(small_dataset / "datalist.json"), "--output", str(out))
    assert main(args) == 0
    earlier = results(out)
    assert sorted(earlier) == sorted(CASES + ["manifest.csv"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "pipeline", *args, "--overwrite"], cwd=str(tmp_path), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    staged: list[Path] = []
    while time.monotonic() < deadline and not staged and process.poll() is None:
        staged = [p for p in out.glob(".staging-*/*.nii.gz") if not is_partial_file(p)]
        time.sleep(0.05)
    assert staged, "the run never wrote a prediction into its staging folder"
    os.killpg(process.pid, signal.SIGKILL)  # the wrapper and the bundle run, at once
    process.wait()
    assert results(out) == earlier  # nothing of the killed run is visible, nothing earlier was lost
    assert main(args + ["--overwrite"]) == 0
    assert sorted(results(out)) == sorted(CASES + ["manifest.csv"])
    assert not list(out.glob(".staging-*")) and not any(is_partial_file(p) for p in out.rglob("*"))
    assert sorted(e.case_id for e in read_manifest(out)) == ["case_1", "case_2", "case_3"]


def test_a_full_disk_while_writing_predictions_gives_a_message_and_keeps_the_earlier_results(
        small_dataset, small_disk, capfd):
    out = small_disk / "pred"
    args = predict_args(small_dataset, "--input", str(small_dataset / "datalist.json"), "--output", str(out))
    assert main(args) == 0
    earlier = results(out)
    fill(small_disk / "filler")
    capfd.readouterr()
    assert main(args + ["--overwrite"]) != 0
    err = capfd.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert results(out) == earlier
    assert not any(is_partial_file(p) for p in out.rglob("*"))
