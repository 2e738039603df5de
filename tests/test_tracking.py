"""``train --tracking mlflow``: MONAI's bundle tracking with configs/tracking/mlflow.json, read back from the real
MLflow store (no mocks): one run with the run's parameters, the training loss per iteration, the validation mean
Dice per validation and the best checkpoint as an artifact; the printed ``monai.bundle run`` line carries the
tracking options; only rank 0 logs; without mlflow the flag is refused in one line."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.handlers import MLFlowHandler

from pipeline.__main__ import build_parser, main
from pipeline.bundles import bundle_command
from pipeline.distributed import handlers_for_rank, torchrun_command
from pipeline.training import train_command
from pipeline.training.tracking import MLFLOW_SETTINGS, TRACKING_EXTRA, sqlite_uri
from test_bundles import BUNDLES, PROFILE, TINY

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = BUNDLES[0]  # isles_unetplusplus
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
EPOCHS = 2


@pytest.fixture(scope="module")
def datalist(synthetic_datalist) -> Path:
    return synthetic_datalist("tracking", cases=4, test_cases=0)


@pytest.fixture
def no_tracking_env(monkeypatch):
    """MLFLOW_TRACKING_URI unset: MLflow would prefer it to any URI the run is given."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def train_argv(datalist: Path, output: Path, *extra: str) -> list[str]:
    return ["train", "--postprocessing", "none", "--bundle", str(BUNDLE), "--datalist", str(datalist), "--fold", "0", "--output", str(output),
            "--plans", "none", *extra]


@pytest.fixture(scope="module")
def tracked_run(datalist, tmp_path_factory):
    """Two epochs of the tiny UNet++ with ``--tracking mlflow`` and the default store: (output folder, stdout)."""
    mlflow = pytest.importorskip("mlflow")
    output = tmp_path_factory.mktemp("tracked") / "run"
    capture = tmp_path_factory.mktemp("tracked_log") / "stdout.txt"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for name, value in ONE_THREAD.items():
            patch.setenv(name, value)
        # the CLI as a user runs it, in its own process; its output read afterwards
        argv = train_argv(datalist, output, "--epochs", str(EPOCHS), *TINY, "--tracking", "mlflow")
        with open(capture, "w") as log:
            result = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=str(ROOT), stdout=log,
                                    stderr=subprocess.STDOUT, timeout=900)
    printed = capture.read_text()
    assert result.returncode == 0, printed[-5000:]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(sqlite_uri(output / "eval" / "mlruns.db"))
    yield output, printed
    mlflow.set_tracking_uri(previous)


def test_a_tracked_run_logs_parameters_loss_dice_and_the_best_checkpoint(tracked_run):
    import mlflow

    output, _ = tracked_run
    assert (output / "eval" / "mlruns.db").is_file()  # the default store: inside the run's log folder
    runs = mlflow.search_runs(experiment_names=[BUNDLE.name])  # the default experiment: the bundle's name
    assert len(runs) == 1
    run = mlflow.MlflowClient().get_run(runs.run_id[0])
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("run_fold0_")  # output folder, fold, start time

    params = run.data.params
    assert params["learning_rate"] == "0.001" and params["epochs"] == str(EPOCHS)
    assert params["patch_size"] == "[64, 64, 2]" and params["features"] == "[4, 8, 8, 16, 16]"
    assert params["channels"] == "['CBF', 'CBV', 'MTT', 'Tmax', 'CT']"
    assert params["fold"] == "0" and params["network"] == "pipeline.networks.UNetPlusPlus"
    assert params["ckpt_dir"] == str(output / "models")

    client = mlflow.MlflowClient()
    last = torch.load(output / "models" / "last.pt", weights_only=True)
    iterations = last["trainer"]["iteration"]
    assert iterations == EPOCHS * last["trainer"]["epoch_length"]
    loss = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in loss] == list(range(1, iterations + 1))  # one loss per iteration
    assert all(m.value > 0 for m in loss)
    dice = client.get_metric_history(run.info.run_id, "val_mean_dice")
    assert [m.step for m in dice] == list(range(1, EPOCHS + 1))  # one per validation (val_interval=1), by epoch
    assert all(0.0 <= m.value <= 1.0 for m in dice)
    # the last validation's Dice is the one MetricsSaver wrote beside it
    saved = dict(line.split(",") for line in (output / "eval" / "metrics.csv").read_text().split())
    assert dice[-1].value == pytest.approx(float(saved["val_mean_dice"]))

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "model.pt" in artifacts  # the best checkpoint
    assert any(name.startswith("config_") and name.endswith(".json") for name in artifacts)  # the executed config
    logged = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model.pt"))
    assert logged.read_bytes() == (output / "models" / "model.pt").read_bytes()


def test_the_printed_line_carries_the_tracking_options(tracked_run):
    output, printed = tracked_run
    line = next(text for text in printed.splitlines() if " -m monai.bundle run " in text)
    words = shlex.split(line)
    options = dict(zip(words, words[1:]))
    assert options["--tracking"] == str(MLFLOW_SETTINGS)
    assert options["--tracking_uri"] == sqlite_uri(output / "eval" / "mlruns.db")
    assert options["--experiment_name"] == BUNDLE.name
    assert options["--run_name"].startswith("run_fold0_")
    assert (output / "eval" / Path(options["--save_execute_config"]).name).is_file()
    assert f"mlflow ui --backend-store-uri {options['--tracking_uri']}" in printed  # how to look at it


@pytest.mark.parametrize("bundle", BUNDLES, ids=["unetplusplus", "unet"])
def test_the_settings_find_every_id_they_name_in_both_bundles(bundle, datalist):
    """The settings name the bundles' engines, handler lists and config values: each must be there."""
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), PROFILE])
    parser.update({"bundle_root": str(bundle), "datalist": str(datalist), "save_execute_config": False})
    ConfigWorkflow.patch_bundle_tracking(parser, ConfigParser.load_config_files(str(MLFLOW_SETTINGS)))
    for handlers in ("train#handlers", "validate#handlers"):
        assert parser.get(handlers)[-1]["_target_"] == "MLFlowHandler"
    params = parser.get_parsed_content("tracking_params")
    assert params["network"] == parser.get("network_def#_target_") and params["bundle"] == bundle.name
    assert params["learning_rate"] == parser.get("learning_rate") and params["epochs"] == parser.get("epochs")


def command_of(datalist: Path, output: Path, *extra: str) -> dict[str, str]:
    """The ``--key value`` pairs of the ``monai.bundle run`` line that ``train`` would run (nothing is run)."""
    command = train_command(build_parser().parse_args(train_argv(datalist, output, *extra)))
    return dict(zip(command, command[1:]))


def test_uri_and_experiment_flags_reach_the_command_line(datalist, tmp_path, no_tracking_env, monkeypatch):
    pytest.importorskip("mlflow")
    options = command_of(datalist, tmp_path / "run", "--tracking", "mlflow", "--tracking-uri",
                         "http://127.0.0.1:5000", "--experiment", "stroke")
    assert options["--tracking_uri"] == "http://127.0.0.1:5000" and options["--experiment_name"] == "stroke"
    # a relative SQLite path is the caller's, not the project root's, where the bundle runs
    monkeypatch.chdir(tmp_path)
    options = command_of(datalist, tmp_path / "run", "--tracking", "mlflow", "--tracking-uri", "sqlite:///db/x.db",
                         "--experiment", "2024")
    assert options["--tracking_uri"] == sqlite_uri(tmp_path / "db" / "x.db")
    assert options["--experiment_name"] == '"2024"'  # python-fire would read a bare 2024 as a number
    # MLFLOW_TRACKING_URI, which MLflow prefers to the handler's URI, is the default store when set
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert command_of(datalist, tmp_path / "run", "--tracking", "mlflow")["--tracking_uri"] == "http://127.0.0.1:5001"
    assert "--tracking" not in command_of(datalist, tmp_path / "run")


@pytest.mark.parametrize("extra, message", [
    (["--tracking-uri", "sqlite:///x.db"], "add --tracking mlflow"),
    (["--tracking", "mlflow", "--tracking-uri", "runs/mlruns"], "not a tracking store URI"),
    (["--tracking", "mlflow", "--tracking-uri", "file:///tmp/mlruns"], "not a tracking store URI"),
], ids=["uri-without-tracking", "folder", "file-uri"])
def test_bad_tracking_flags_are_refused_before_the_run(datalist, tmp_path, capsys, no_tracking_env, extra, message):
    pytest.importorskip("mlflow")
    assert main(train_argv(datalist, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("variable, extra, message", [
    ("http://127.0.0.1:5001", ["--tracking-uri", "http://127.0.0.1:5000"], "unset MLFLOW_TRACKING_URI"),
    ("sqlite:///relative.db", [], "make it absolute"),
    ("/tmp/mlruns", [], "MLFLOW_TRACKING_URI '/tmp/mlruns': not a tracking store URI"),
], ids=["contradicted", "relative", "folder"])
def test_a_tracking_uri_variable_that_would_mislead_mlflow_is_refused(datalist, tmp_path, capsys, monkeypatch,
                                                                       variable, extra, message):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", variable)  # MLflow prefers it to the URI the run is given
    assert main(train_argv(datalist, tmp_path / "run", "--tracking", "mlflow", *extra)) == 2
    assert message in capsys.readouterr().err


def test_without_mlflow_the_flag_is_refused_in_one_line(datalist, tmp_path):
    # mlflow made unimportable in this process the way Python marks a module that must not load
    # (sys.modules[name] = None: `import mlflow` raises ImportError), without uninstalling it
    code = ("import sys; sys.modules['mlflow'] = None; from pipeline.__main__ import main; "
            f"sys.exit(main({train_argv(datalist, tmp_path / 'run', '--tracking', 'mlflow')!r}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: --tracking mlflow needs the mlflow package") and TRACKING_EXTRA in lines[0]
    assert not (tmp_path / "run").exists()


def test_other_ranks_drop_the_mlflow_handler(monkeypatch):
    pytest.importorskip("mlflow")
    handler = MLFlowHandler(tracking_uri="http://127.0.0.1:5000")  # no request is made before a run starts
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert handlers_for_rank([handler]) == [handler]
    monkeypatch.setenv("RANK", "1")
    assert handlers_for_rank([handler]) == []


@pytest.mark.slow
def test_under_torchrun_only_rank_zero_logs(datalist, tmp_path, no_tracking_env):
    """One epoch of multi_gpu_train.json in two processes (gloo) with the tracking settings: one run, logged once."""
    mlflow = pytest.importorskip("mlflow")
    out = tmp_path / "ddp"
    train = train_command(build_parser().parse_args(train_argv(datalist, out, "--tracking", "mlflow")))
    tracking = [(k[2:], v) for k, v in zip(train, train[1:])
                if k in ("--tracking", "--tracking_uri", "--experiment_name", "--run_name", "--save_execute_config")]
    settings = [("datalist", str(datalist)), ("fold", 0), ("epochs", 1), ("ckpt_dir", str(out / "models")),
                ("output_dir", str(out / "eval")), ("features", [4, 8, 8, 16, 16]), ("patch_size", [64, 64, 2]),
                ("val_interval", 1), ("batch_size", 2), ("cache_rate", 1.0), *tracking]
    command = torchrun_command(bundle_command(BUNDLE, "train.json", Path(PROFILE), settings,
                                              ["multi_gpu_train.json"]), 2)
    result = subprocess.run(command, cwd=str(ROOT), env={**os.environ, **ONE_THREAD}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    client = mlflow.MlflowClient(tracking_uri=sqlite_uri(out / "eval" / "mlruns.db"))
    runs = client.search_runs([client.get_experiment_by_name(BUNDLE.name).experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    assert [m.step for m in client.get_metric_history(run_id, "val_mean_dice")] == [1]  # one validation, once
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1]  # one case per rank: one step
    assert "model.pt" in {a.path for a in client.list_artifacts(run_id)}
