"""Checkpoint ensembles and cross-validation: ``train --fold cv``, ``predict --model RUN`` / ``--checkpoint a,b``,
``ckpt_path`` as a list in ``inference.json``, and the plans ``train`` picks up by default."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer
from torch import nn

from pipeline.__main__ import main
from pipeline.cli.arguments import fold_argument
from pipeline.errors import CaseError
from pipeline.inferers import EnsembleInferer, FlipTTAInferer, MeanEnsemble, segmentation_inferer
from pipeline.networks import UNetPlusPlus
from pipeline.postprocessing import LesionPostprocessing, lesion_mask
from pipeline.postprocessing.lesion_mask import voxel_volume_ml
from pipeline.planning.bundle_settings import training_plans_path
from pipeline.predict.command import checkpoint_specs, network_settings
from pipeline.predict.models import resolve_checkpoints
from pipeline.predict.weights import EnsembleCheckpointLoader, ensemble_network, load_weights
from pipeline.training.cross_validation import training_folds

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "isles_unetplusplus"
FEATURES = [4, 4, 8, 8, 8]
TINY = ["--plans", "none", "--set", f"features={json.dumps(FEATURES).replace(' ', '')}",
        "--set", "patch_size=[32,32,2]", "--set", "pixdim=[4.0,4.0,0.0]", "--set", "val_interval=1",
        "--set", "cache_rate=0.0", "--set", "batch_size=2"]


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return UNetPlusPlus(spatial_dims=3, in_channels=2, out_channels=2, strides=[[2, 2, 1]] * 4,
                        features=FEATURES, norm="instance").eval()


# ------------------------------------------------------------------------------------------------- the parts
def test_the_ensemble_inferer_averages_the_probabilities_of_each_member_as_it_would_predict_alone():
    members = [tiny_net(0), tiny_net(1)]
    window = SlidingWindowInferer(roi_size=[16, 16, 2], overlap=0.5, mode="gaussian")
    x = torch.rand(1, 2, 40, 24, 3)
    with torch.no_grad():
        out = EnsembleInferer(window)(x, MeanEnsemble(members, log_output=True))
        expected = sum(torch.softmax(window(x, m), 1) for m in members) / 2
    assert torch.allclose(torch.softmax(out, 1), expected, atol=1e-5)
    assert not torch.allclose(expected, torch.softmax(window(x, members[0]), 1), atol=1e-3)


def test_segmentation_inferer_runs_an_ensemble_member_by_member_inside_tta():
    ensemble = MeanEnsemble([tiny_net(0), tiny_net(1)], log_output=True)
    assert [list(s) for s in ensemble.strides] == [[2, 2, 1]] * 4
    chosen = segmentation_inferer(ensemble, roi_size=[32, 32, 2], tta=True, crop_foreground=False)
    assert isinstance(chosen, FlipTTAInferer) and isinstance(chosen.inferer, EnsembleInferer)
    assert chosen.flips == [[0], [1], [0, 1]]
    x = torch.rand(1, 2, 32, 32, 2)
    with torch.no_grad():
        assert torch.allclose(torch.softmax(chosen(x, ensemble), 1).sum(1), torch.ones(1, 32, 32, 2), atol=1e-5)
    assert isinstance(segmentation_inferer(tiny_net(0), roi_size=[32, 32, 2], crop_foreground=False).inferer,
                      SlidingWindowInferer)


def test_mean_ensemble_called_as_a_module_gives_the_log_of_the_mean_probabilities():
    members = [tiny_net(0), tiny_net(1)]
    x = torch.rand(1, 2, 32, 32, 2)
    with torch.no_grad():
        out = MeanEnsemble(members, log_output=True)(x)
        assert torch.allclose(torch.softmax(out, 1), sum(torch.softmax(m(x), 1) for m in members) / 2, atol=1e-5)
        assert torch.allclose(MeanEnsemble(members)(x).sum(1), torch.ones(1, 32, 32, 2), atol=1e-5)
        assert torch.allclose(torch.softmax(SimpleInferer()(x, MeanEnsemble(members[:1], log_output=True)), 1),
                              torch.softmax(members[0](x), 1), atol=1e-5)


def test_the_inference_network_is_one_network_or_an_ensemble_whose_weights_load_when_the_engine_starts(tmp_path):
    from ignite.engine import Engine

    first, second = tiny_net(0), tiny_net(1)
    torch.save(first.state_dict(), tmp_path / "model.pt")  # a best model: a bare state dict
    torch.save({"model": second.state_dict(), "trainer": {"iteration": 1}}, tmp_path / "last.pt")  # a training one

    def loaded(network, checkpoints):
        engine = Engine(lambda engine, batch: None)
        EnsembleCheckpointLoader(checkpoints, network).attach(engine)
        engine.run([0], max_epochs=1)
        return network

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    single = ensemble_network(tiny_net(5), str(tmp_path / "model.pt"))
    assert not isinstance(single, MeanEnsemble) and not same(single, first)  # nothing read yet
    assert same(loaded(single, str(tmp_path / "model.pt")), first)
    checkpoints = [str(tmp_path / "model.pt"), str(tmp_path / "last.pt")]
    both = ensemble_network(tiny_net(5), checkpoints)
    assert isinstance(both, MeanEnsemble) and both.log_output and len(both.networks) == 2
    loaded(both, checkpoints)
    assert same(both.networks[0], first) and same(both.networks[1], second)
    assert same(load_weights(tiny_net(5), tmp_path / "last.pt"), second)
    with pytest.raises(ValueError, match="2 checkpoint"):
        loaded(single, checkpoints)
    with pytest.raises(FileNotFoundError, match="gone.pt"):
        load_weights(tiny_net(5), tmp_path / "gone.pt")
    with pytest.raises(ValueError, match="empty"):
        ensemble_network(tiny_net(5), [])


def _run(folder: Path, *names: str) -> Path:
    (folder / "models").mkdir(parents=True)
    for name in names:
        (folder / "models" / name).write_bytes(b"weights")
    return folder


def test_checkpoints_are_found_in_files_runs_and_folders_of_fold_runs(tmp_path):
    best = _run(tmp_path / "best", "model.pt", "last.pt")
    final = _run(tmp_path / "final", "last.pt")
    default = tmp_path / "bundle" / "model.pt"
    assert resolve_checkpoints([best], default) == [best / "models" / "model.pt"]  # the best model first
    assert resolve_checkpoints([final], default) == [final / "models" / "last.pt"]
    assert resolve_checkpoints([final / "models" / "last.pt", best / "models"], default) == [
        final / "models" / "last.pt", best / "models" / "model.pt"]
    cv = tmp_path / "cv"
    for fold in (10, 2, 0):  # by fold number, not by name
        _run(cv / f"fold_{fold}", "last.pt")
    (cv / "fold_notes").mkdir()
    assert resolve_checkpoints([cv], default) == [cv / f"fold_{k}" / "models" / "last.pt" for k in (0, 2, 10)]
    assert resolve_checkpoints([cv, cv / "fold_0"], default) == resolve_checkpoints([cv], default)  # no repeats
    _run(cv / "fold_3")
    with pytest.raises(CaseError, match="fold_3"):
        resolve_checkpoints([cv], default)
    with pytest.raises(CaseError, match="holds no checkpoint"):
        resolve_checkpoints([tmp_path / "cv" / "fold_notes"], default)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve_checkpoints([tmp_path / "nowhere"], default)
    with pytest.raises(FileNotFoundError, match="--model"):
        resolve_checkpoints([], default)
    args = argparse.Namespace(checkpoint=f"{best}, {final}", model=str(cv))
    assert checkpoint_specs(args) == [str(best), str(final), str(cv)]


def test_an_ensemble_of_checkpoints_of_different_networks_is_refused(tmp_path):
    a, b = _run(tmp_path / "a", "model.pt"), _run(tmp_path / "b", "model.pt")
    for run, features in ((a, [4] * 5), (b, [8] * 5)):
        plans = {"features": features, "patch_size": [32, 32, 2], "strides": [[2, 2, 1]] * 4, "batch_size": 2,
                 "kernel_sizes": [[3, 3, 1]] * 5, "target_spacing": [1.0, 1.0, 4.0], "configuration": "3d_fullres", "version": 1}
        (run / "models" / "trained_plans.json").write_text(json.dumps(plans))
    checkpoints = [a / "models" / "model.pt", b / "models" / "model.pt"]
    with pytest.raises(CaseError, match="another network"):
        network_settings(checkpoints, None)
    assert ("features", [4] * 5) in network_settings(checkpoints[:1], None)


def test_fold_arguments_and_the_folds_they_train(tmp_path):
    assert fold_argument("3") == 3 and fold_argument("all") == "all" and fold_argument("cv") == "cv"
    assert fold_argument("0,2") == (0, 2)
    for bad in ("one", "0,0", "1,x"):
        with pytest.raises(argparse.ArgumentTypeError):
            fold_argument(bad)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"folds": 3, "training": [{"case_id": f"c{i}", "fold": i % 3} for i in range(6)]}))
    assert training_folds(1, datalist) is None and training_folds("all", datalist) is None
    assert training_folds("cv", datalist) == [0, 1, 2]
    assert training_folds((2, 0), datalist) == [2, 0]
    with pytest.raises(ValueError, match="folds 0 to 2"):
        training_folds((0, 3), datalist)
    datalist.write_text(json.dumps({"folds": 1, "training": [{"case_id": "c0", "fold": 0}]}))
    with pytest.raises(ValueError, match="at least 2"):
        training_folds("cv", datalist)


def test_train_uses_the_plans_beside_the_datalist_unless_told_otherwise(tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text("{}")
    assert training_plans_path(None, datalist) is None  # prepare wrote no plans
    (tmp_path / "plans.json").write_text("{}")
    assert training_plans_path(None, datalist) == tmp_path / "plans.json"
    assert training_plans_path("none", datalist) is None
    assert training_plans_path("other.json", datalist) == Path("other.json")


# -------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def cross_validation(synthetic_datalist, tmp_path_factory):
    datalist = synthetic_datalist("ensembles", cases=4, test_cases=1)
    run = tmp_path_factory.mktemp("cv") / "run"
    status = main(["train", "--bundle", str(BUNDLE), "--datalist", str(datalist), "--fold", "cv", "--epochs", "1",
                   "--output", str(run), *TINY])
    assert status == 0
    return datalist, run


def test_train_fold_cv_trains_every_fold_and_summarises_their_validation_dice(cross_validation):
    _, run = cross_validation
    assert sorted(p.name for p in run.iterdir()) == ["cross_validation.csv", "cross_validation.json", "fold_0",
                                                     "fold_1", "postprocessing.json"]
    summary = json.loads((run / "cross_validation.json").read_text())
    assert [row["fold"] for row in summary["folds"]] == [0, 1] and summary["validated_folds"] == 2
    dice = [row["best_val_mean_dice"] for row in summary["folds"]]
    assert all(0.0 <= d <= 1.0 for d in dice) and summary["mean_val_mean_dice"] == pytest.approx(sum(dice) / 2)
    for row in summary["folds"]:
        assert row["epochs_trained"] == 1 and row["best_epoch"] == 1
        assert Path(row["checkpoint"]) == run / f"fold_{row['fold']}" / "models" / "model.pt"
    assert "best_val_mean_dice" in (run / "cross_validation.csv").read_text().splitlines()[0]


def _probabilities(folder: Path) -> np.ndarray:
    (found,) = folder.glob("*_probabilities.npz")
    with np.load(found, allow_pickle=False) as saved:
        return saved["probabilities"].astype(np.float32)


def test_predict_model_ensembles_the_folds_as_the_mean_of_their_probabilities(cross_validation, tmp_path, capfd):
    datalist, run = cross_validation
    common = ["predict", "--bundle", str(BUNDLE), "--input", str(datalist), "--probabilities",
              "--set", "pixdim=[4.0,4.0,0.0]"]
    alone = []
    for fold in (0, 1):
        assert main(common + ["--output", str(tmp_path / f"fold_{fold}"), "--checkpoint", str(run / f"fold_{fold}"),
                              "--set", f"features={json.dumps(FEATURES).replace(' ', '')}"]) == 0
        alone.append(_probabilities(tmp_path / f"fold_{fold}"))
    capfd.readouterr()
    assert main(common + ["--output", str(tmp_path / "ensemble"), "--model", str(run),
                          "--set", f"features={json.dumps(FEATURES).replace(' ', '')}"]) == 0
    out = capfd.readouterr().out
    assert "an ensemble of 2 checkpoints" in out and f"post-processing from {run / 'postprocessing.json'}" in out
    ensemble = _probabilities(tmp_path / "ensemble")
    assert np.abs(alone[0] - alone[1]).max() > 1e-2  # two different models
    assert np.abs(ensemble - (alone[0] + alone[1]) / 2).max() < 2e-3  # float16 maps
    # the post-processing train fitted on both folds' validation cases is the ensemble's
    fitted = json.loads((run / "postprocessing.json").read_text())
    assert fitted["validation"]["folds"] == [0, 1] and fitted["validation"]["cases"] == 4
    assert sorted(p.name for p in (run / "fold_0" / "validation").glob("*_probabilities.npz"))  # kept for inspection
    setting = LesionPostprocessing(fitted["threshold"], fitted["min_component_ml"])
    (written,) = (tmp_path / "ensemble").glob("*.nii.gz")
    image = nib.load(written)
    expected = lesion_mask(ensemble, voxel_volume_ml(image.affine), setting)
    assert np.mean(np.asarray(image.dataobj) == expected) > 0.999  # float16 probabilities at the threshold
    manifest = (tmp_path / "ensemble" / "manifest.csv").read_text()
    assert str(run / "fold_0" / "models" / "model.pt") + ";" + str(run / "fold_1" / "models" / "model.pt") in manifest
