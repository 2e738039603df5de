"""``scripts/depth_study.py --quick``: FCN-8s, U-Nets L1-L4 and UNet++ pruned to L1-L4, each run as a user runs it,
in one table, one figure and one summary; and the summary's statements, computed from the table."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest

from pipeline.studies.depth import DEFAULT_MODELS, MODELS, TRAININGS, run_depth_study, study_plans, train_overrides
from pipeline.studies.depth_report import findings, summarise

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("depth_study", ROOT / "scripts" / "depth_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# every family once in CI (FCN, the depth-1 U-Net DynUNet refuses and a deeper one, UNet++ trained once and pruned):
# each model is a bundle run of its own, so the nine of the default list cost twice the time; those run when slow
# tests are asked for
CI_MODELS = ("fcn8s", "unet_l1", "unet_l2", "unetpp_l1", "unetpp_l2")


@pytest.mark.parametrize("models", [pytest.param(CI_MODELS, id="each-family"),
                                    pytest.param(DEFAULT_MODELS, id="default-models", marks=pytest.mark.slow)])
def test_the_quick_study_tables_every_model_with_pruned_unetpp_rows_from_one_training(
        models, tmp_path, capsys, monkeypatch, seeded_single_thread):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the bundle runs: tiny networks, faster on one thread
    out = tmp_path / "study"
    arguments = ["--quick", "--out", str(out)] + ([] if models == DEFAULT_MODELS else ["--models", ",".join(models)])
    assert _script().main(arguments) == 0
    assert str(out / "depth_study.md") in capsys.readouterr().out

    rows = list(csv.DictReader((out / "depth_study.csv").open(encoding="utf-8")))
    assert [r["model"] for r in rows] == list(models)
    for row in rows:
        assert 0.0 <= float(row["dice_mean"]) <= 1.0 and math.isfinite(float(row["dice_mean"]))
        assert int(row["parameters"]) > 0 and float(row["seconds_per_case"]) > 0
        assert row["seeds"] == "1"
    pruned = [int(r["parameters"]) for r in rows if r["model"].startswith("unetpp_l")]
    assert len(pruned) >= 2 and all(a < b for a, b in zip(pruned, pruned[1:]))  # fewer parameters at lower L
    unets = [int(r["parameters"]) for r in rows if r["model"].startswith("unet_l")]
    assert all(a < b for a, b in zip(unets, unets[1:]))

    seed = out / "seed_0"
    assert (seed / "unetpp" / "models" / "last.pt").is_file()  # UNet++ trained once, predicted at four levels
    assert not any(p.name.startswith("unetpp_l") for p in seed.iterdir() if p.is_dir() and (p / "models").exists())
    for model in models:
        assert (seed / f"eval_{model}" / "metrics_summary.json").is_file()
    assert (out / "depth_study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "depth_study.md").read_text(encoding="utf-8")
    for model in models:
        assert f"| {MODELS[model].label} |" in text
    assert "| threshold rule |" in text and "## What the table shows" in text and "One seed" in text


def test_unknown_or_repeated_models_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        run_depth_study(tmp_path / "a", [0], ["unet_l9"])
    with pytest.raises(ValueError, match="each model once"):
        run_depth_study(tmp_path / "b", [0], ["unet_l1", "unet_l1"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_each_network_is_cut_from_the_same_plans():
    plans = study_plans({"strides": [[2, 2, 1]] * 5, "kernel_sizes": [[3, 3, 1]] * 6, "patch_size": [256, 256, 1],
                         "features": [16, 32, 64, 128, 256, 256], "batch_size": 2})
    sets = dict(s.split("=", 1) for s in train_overrides(TRAININGS["unet_l2"], plans))
    assert json.loads(sets["strides"]) == [[2, 2, 1]] * 2 and json.loads(sets["features"]) == [8, 16, 32]
    assert sets["network_def#deep_supervision"] == "0"  # the article's U-Nets: no deep supervision
    fcn = json.loads(dict(s.split("=", 1) for s in train_overrides(TRAININGS["fcn8s"], plans))["network_def"])
    assert fcn["variant"] == "8s" and fcn["features"] == [8, 16, 32, 64, 128] and len(fcn["strides"]) == 5


def _row(model, dice, parameters, seconds, seed=0):
    training = "unetpp" if model.startswith("unetpp") else model
    return {"seed": seed, "model": model, "training": training, "dice": dice, "avd_ml": 1.0, "lesion_f1": 0.5,
            "rule_dice": 0.3, "parameters": parameters, "seconds_per_case": seconds, "train_s": 10.0, "epochs": 5}


def test_the_summary_says_what_the_numbers_show():
    labels = {f"unet_l{d}": f"U-Net L{d}" for d in (1, 2, 3)} | {f"unetpp_l{d}": f"UNet++ L{d}" for d in (1, 2, 3)}
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        rows += [_row("unet_l1", 0.30 + shift, 100, 1.0, seed), _row("unet_l2", 0.45 + shift, 400, 1.5, seed),
                 _row("unet_l3", 0.40 + shift, 1600, 2.0, seed), _row("unetpp_l1", 0.31 + shift, 110, 0.5, seed),
                 _row("unetpp_l2", 0.495 + shift, 500, 1.0, seed), _row("unetpp_l3", 0.50 + shift, 2000, 2.0, seed)]
    summary = summarise(rows, labels)
    assert [s["seeds"] for s in summary] == [2] * 6
    assert summary[1]["dice_mean"] == pytest.approx(0.46) and summary[1]["dice_sd"] == pytest.approx(0.0141, abs=1e-3)
    text = "\n".join(findings(summary))
    assert "The best depth is L2" in text and "deeper is not better here" in text
    assert "The smallest level within 0.01 Dice of L3 is L2" in text  # 0.505 against 0.51
    assert "UNet++ ahead at 3 of 3 depths" in text
    assert "Best model: UNet++ L3" in text and "One seed" not in text and "time cap" not in text


def test_a_single_seed_is_not_called_a_spread_and_a_capped_training_is_named():
    rows = [_row("unet_l1", 0.30, 100, 1.0), {**_row("unet_l2", 0.35, 400, 1.5), "epochs": 3}]
    summary = summarise(rows, {"unet_l1": "U-Net L1", "unet_l2": "U-Net L2"})
    assert math.isnan(summary[0]["dice_sd"])
    text = "\n".join(findings(summary))
    assert "The deepest, L2, scores best; Dice rises with every level." in text and "One seed" in text
    assert "the time cap stopped U-Net L2 at 3 epochs" in text
