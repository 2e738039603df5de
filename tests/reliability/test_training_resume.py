"""Resume keeps what the interrupted run had: the best validation score travels with the training checkpoints, so
a restarted run does not replace the best model (``models/model.pt``, predict's default weights) with a worse one;
and a checkpoint that cannot be read is skipped for the next older one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from pipeline.__main__ import main
from pipeline.training.checkpoints import AtomicCheckpointSaver, attach_resume
from pipeline.io import atomic_path

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "isles_unet"
TINY = ["--plans", "none", "--set", "features=[4,4,8,8,8]", "--set", "patch_size=[32,32,2]", "--set", "pixdim=[4.0,4.0,0.0]",
        "--set", "val_interval=1", "--set", "batch_size=2", "--set", "samples_per_case=1", "--set", "cache_rate=0.0"]


@pytest.fixture(scope="module")
def datalist(synthetic_datalist) -> Path:
    return synthetic_datalist("training_resume", cases=4, test_cases=0)


def test_a_resumed_run_whose_validation_is_worse_keeps_the_best_model(datalist, tmp_path, capfd):
    output = tmp_path / "run"
    models = output / "models"
    common = ["train", "--postprocessing", "none", "--bundle", str(BUNDLE), "--datalist", str(datalist), "--fold", "0", "--output", str(output),
              *TINY]
    assert main(common + ["--epochs", "1"]) == 0
    best = models / "model.pt"
    kept, kept_inode = best.read_bytes(), best.stat().st_ino
    saved = torch.load(models / "last.pt", weights_only=True)
    assert saved["best_metric"]["best_metric_epoch"] == 1  # the best score is part of the training checkpoint
    score = saved["best_metric"]["best_metric"]
    # the run diverged after its last checkpoint: all weights zero, so the network predicts no lesion (Dice 0.0)
    saved["model"] = {k: torch.zeros_like(v) for k, v in saved["model"].items()}
    with atomic_path(models / "last.pt") as tmp:
        torch.save(saved, tmp)

    capfd.readouterr()
    assert main(common + ["--epochs", "2", "--set", "learning_rate=0.0"]) == 0  # resumes from that last.pt
    log = capfd.readouterr()
    printed = log.out + log.err
    assert "restored the best val_mean_dice" in printed
    assert "Epoch[2] Metrics -- val_mean_dice: 0.0000" in printed  # worse than the best before the restart
    assert "Got new best metric" not in printed
    assert best.read_bytes() == kept and best.stat().st_ino == kept_inode  # model.pt was not replaced
    resumed = torch.load(models / "last.pt", weights_only=True)["best_metric"]
    assert (resumed["best_metric"], resumed["best_metric_epoch"]) == (score, 1)


def scripted_validation(scores: list[float]) -> Engine:
    """An engine whose epoch ``k`` scores ``scores[k - 1]`` as its key metric ``dice`` (MONAI's evaluator state)."""
    engine = Engine(lambda e, batch: None)
    engine.state.key_metric_name, engine.state.best_metric, engine.state.best_metric_epoch = "dice", -1, -1

    @engine.on(Events.EPOCH_COMPLETED)
    def score(e):
        e.state.metrics["dice"] = scores[e.state.epoch - 1]
        if e.state.metrics["dice"] > e.state.best_metric:
            e.state.best_metric, e.state.best_metric_epoch = e.state.metrics["dice"], e.state.epoch

    return engine


def best_model_saver(folder: Path, weights: torch.nn.Module) -> AtomicCheckpointSaver:
    return AtomicCheckpointSaver(save_dir=str(folder), save_dict={"model": weights}, save_key_metric=True,
                                 key_metric_name="dice", key_metric_filename="model.pt")


def test_the_restored_best_score_lets_only_a_better_validation_replace_the_best_model(tmp_path):
    weights = torch.nn.Linear(2, 1)
    first = scripted_validation([0.4, 0.6])
    saver = best_model_saver(tmp_path, weights)
    saver.attach(first)
    first.run([0], max_epochs=2)
    state = saver.state_dict()
    assert state["best_metric"] == 0.6 and state["best_metric_epoch"] == 2
    torch.save({"best_metric": state}, tmp_path / "state.pt")  # as the training checkpoint holds it
    restored = torch.load(tmp_path / "state.pt", weights_only=True)["best_metric"]
    best_bytes = (tmp_path / "model.pt").read_bytes()

    # after a restart: a worse validation leaves model.pt alone, a better one replaces it
    with torch.no_grad():
        weights.weight.fill_(7.0)
    second = scripted_validation([0.0, 0.3, 0.7])
    resumed = best_model_saver(tmp_path, weights)
    resumed.attach(second)
    resumed.load_state_dict(restored)
    assert (second.state.best_metric, second.state.best_metric_epoch) == (0.6, 2)
    second.run([0], max_epochs=2)
    assert (tmp_path / "model.pt").read_bytes() == best_bytes
    second.run([0], max_epochs=3)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].eq(7.0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "state.pt"]


def test_without_its_best_model_file_the_score_is_not_restored(tmp_path):
    saver = best_model_saver(tmp_path, torch.nn.Linear(2, 1))
    engine = scripted_validation([0.1])
    saver.attach(engine)
    saver.load_state_dict({"checkpointer": {"_saved": [(0.9, "model_key_metric=0.9000.pt")]},
                           "best_metric": 0.9, "best_metric_epoch": 3})  # but model.pt is gone
    assert engine.state.best_metric == -1
    engine.run([0], max_epochs=1)
    assert (tmp_path / "model.pt").is_file()  # the next validation writes a best model again


def test_resume_skips_an_unreadable_newest_checkpoint_for_the_next_older_one(tmp_path, caplog):
    weights = torch.nn.Linear(2, 1)
    trainer = Engine(lambda e, batch: None)
    trainer.run([0, 1], max_epochs=3)
    torch.save({"model": weights.state_dict(), "trainer": trainer.state_dict()}, tmp_path / "checkpoint_epoch=3.pt")
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 truncated")  # newer, and not a whole checkpoint
    resumed = Engine(lambda e, batch: None)
    chosen = attach_resume(resumed, tmp_path, {"model": weights, "trainer": resumed})
    assert chosen == tmp_path / "checkpoint_epoch=3.pt"
    assert any("skipping the unreadable checkpoint last.pt" in r.getMessage() for r in caplog.records)
    resumed.run([0, 1], max_epochs=4)
    assert resumed.state.epoch == 4 and resumed.state.iteration == 8  # one more epoch after the third


def test_resume_refuses_when_no_checkpoint_can_be_read(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=re.escape(f"no checkpoint in {tmp_path} can be read")):
        attach_resume(Engine(lambda e, batch: None), tmp_path, {"model": torch.nn.Linear(2, 1)})
