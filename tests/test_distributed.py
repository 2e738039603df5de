"""Several processes on torch.distributed: torchrun DDP training, each rank caching its share, sharded inference.

The runs are real ``torchrun`` (``python -m torch.distributed.run --standalone``) subprocesses on the CPU
with the gloo backend, on the synthetic dataset, with tiny networks.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.handlers import MetricsSaver, StatsHandler

from pipeline.__main__ import build_parser
from pipeline.bundles import bundle_command
from pipeline.data.datalist import load_datalist
from pipeline.distributed import handlers_for_rank, rank_share, torchrun_command
from pipeline.predict import run_predict

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = [ROOT / "bundles" / "isles_unetplusplus", ROOT / "bundles" / "isles_unet"]
IDS = ["unetplusplus", "unet"]
PROFILE = ROOT / "configs" / "datasets" / "isles2018.yaml"
FEATURES = [4, 8, 8, 16, 16]
TINY = [("features", FEATURES), ("patch_size", [64, 64, 2]), ("val_interval", 1), ("batch_size", 2), ("cache_rate", 1.0)]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def datalist(synthetic_datalist) -> Path:
    return synthetic_datalist("distributed", cases=4, test_cases=3)


def run_logged(command: list[str]) -> subprocess.CompletedProcess:
    """Run a command from the project root on one thread per process, output captured."""
    return subprocess.run(command, cwd=str(ROOT), env={**os.environ, **ONE_THREAD},
                          capture_output=True, encoding="utf-8", errors="replace", timeout=600)


@pytest.fixture(scope="module")
def ddp_training(datalist, tmp_path_factory):
    """One epoch of the UNet++ bundle in two processes: (output folder, completed process)."""
    out = tmp_path_factory.mktemp("ddp")
    settings = [("datalist", str(datalist)), ("fold", 0), ("epochs", 1),
                ("ckpt_dir", str(out / "models")), ("output_dir", str(out / "eval")), *TINY]
    command = bundle_command(BUNDLES[0], "train.json", PROFILE, settings, ["multi_gpu_train.json"])
    result = run_logged(torchrun_command(command, 2))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out, result


def plain_network(bundle: Path, datalist: Path) -> torch.nn.Module:
    """The bundle's network as a single process builds it for inference on ``datalist`` (no DDP wrapper)."""
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.json"), str(PROFILE)])
    parser["features"] = FEATURES
    parser["datalist"] = str(datalist)
    return parser.get_parsed_content("network_def")


# --- pieces, in one process ---------------------------------------------------------------------------


def test_rank_share_gives_every_case_to_exactly_one_rank(monkeypatch):
    records = [f"case_{i}" for i in range(5)]
    shares = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        shares.append(rank_share(records))
    assert sorted(shares[0] + shares[1]) == records and len(shares[0]) == 3 and len(shares[1]) == 2


def test_rank_share_leaves_a_rank_without_cases_when_there_are_too_few(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert rank_share(["case_1", "case_2"]) == []
    with pytest.raises(ValueError, match="2 record"):
        rank_share(["case_1", "case_2"], even_divisible=True)


def test_other_ranks_drop_the_logging_handlers_but_keep_the_collective_ones(monkeypatch, tmp_path):
    stats, saver = StatsHandler(), MetricsSaver(save_dir=str(tmp_path), metrics=["val_mean_dice"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert handlers_for_rank([stats, saver]) == [stats, saver]
    monkeypatch.setenv("RANK", "1")
    assert handlers_for_rank([stats, saver]) == [saver]


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_each_rank_caches_only_its_share_of_the_training_cases(bundle, datalist, monkeypatch, tmp_path):
    cached = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        parser = ConfigParser()
        parser.read_config([str(bundle / "configs" / c) for c in ("train.json", "multi_gpu_train.json")] + [str(PROFILE)])
        parser.update({"datalist": str(datalist), "bundle_root": str(tmp_path), "fold": 0, "cache_rate": 1.0})
        dataset = parser.get_parsed_content("train#dataset")
        assert dataset.cache_num == len(dataset) == 1  # this rank's one case, cached
        cached.append(dataset.data[0]["case_id"])
        validation = parser.get_parsed_content("validate#dataset")
        assert validation.runtime_cache is True  # filled only with what this rank's sampler reads
    training = [r["case_id"] for r in load_datalist(datalist, "training", exclude_fold=0)]
    assert len(training) == 2 and sorted(cached) == sorted(training)  # one case per rank, none twice


# --- torchrun -----------------------------------------------------------------------------------------


def test_two_process_training_writes_a_checkpoint_that_loads_in_one_process(ddp_training, datalist):
    out, result = ddp_training
    assert "2 training case(s) shared by 2 processes: [1, 1]" in result.stdout
    network = plain_network(BUNDLES[0], datalist)
    last = torch.load(out / "models" / "last.pt", weights_only=True)
    assert last["trainer"]["iteration"] == last["trainer"]["epoch_length"] == 1  # one case per rank: one step
    best = torch.load(out / "models" / "model.pt", weights_only=True)
    for state in (last["model"], best):
        assert not any(key.startswith("module.") for key in state)
        network.load_state_dict(state, strict=True)


def test_only_rank_zero_writes_logs_and_metrics(ddp_training):
    out, _ = ddp_training
    events = list((out / "eval").glob("events.out.tfevents.*"))
    assert events and len({name.name.split(".")[-2] for name in events}) == 1  # one process id
    assert (out / "eval" / "metrics.csv").is_file()


def predict_args(*argv: str, nproc: int) -> argparse.Namespace:
    """``python -m pipeline predict`` arguments with ``--nproc``."""
    args = build_parser().parse_args(["predict", *argv])
    args.nproc = nproc
    return args


def sharded_predict(ddp_training, input_path: Path, output: Path, nproc: int) -> int:
    out, _ = ddp_training
    args = predict_args("--bundle", str(BUNDLES[0]), "--input", str(input_path), "--output", str(output),
                        "--checkpoint", str(out / "models" / "model.pt"), "--set", f"features={FEATURES}".replace(" ", ""),
                        nproc=nproc)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ONE_THREAD.items():
            patch.setenv(name, value)
        return run_predict(args)


def test_two_process_inference_writes_the_same_files_as_one_process(ddp_training, datalist, tmp_path, capsys):
    assert sharded_predict(ddp_training, datalist, tmp_path / "one", nproc=1) == 0
    assert sharded_predict(ddp_training, datalist, tmp_path / "two", nproc=2) == 0
    printed = capsys.readouterr().out
    assert f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node 2 -m monai.bundle run" in printed
    assert "multi_gpu_inference.json" in printed
    one = {p.name: p.read_bytes() for p in (tmp_path / "one").glob("*.nii.gz")}
    two = {p.name: p.read_bytes() for p in (tmp_path / "two").glob("*.nii.gz")}
    assert sorted(one) == ["case_1.nii.gz", "case_2.nii.gz", "case_3.nii.gz"]
    assert sorted(two) == sorted(one)
    for name in one:
        assert two[name] == one[name], name


def test_a_failing_case_of_the_sharded_inference_is_reported(ddp_training, datalist, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(datalist.parent / "data", data)
    cbv = next((data / "TESTING" / "case_2").glob("SMIR.Brain.XX.O.CT_CBV.*/*.nii"))
    cbv.write_bytes(cbv.read_bytes()[:400])  # truncated; case_2 is rank 1's, the table is rank 0's
    out = tmp_path / "pred"
    assert sharded_predict(ddp_training, data, out, nproc=2) == 2
    assert sorted(p.name for p in out.iterdir()) == ["case_1.nii.gz", "case_3.nii.gz", "failures.csv", "manifest.csv"]
    with open(out / "failures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["case_id"] for row in rows] == ["case_2"] and cbv.name in rows[0]["error"]
    assert "case_2" in capsys.readouterr().err
