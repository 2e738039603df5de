"""``scripts/quality_study.py --quick``: the study runs each variant as a user would and writes its tables."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from pipeline.studies.quality import run_quality_study, summarise

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("quality_study", ROOT / "scripts" / "quality_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_quick_study_trains_once_per_model_and_tables_every_variant(tmp_path, capsys):
    out = tmp_path / "study"
    assert _script().main(["--quick", "--out", str(out), "--seeds", "3", "--variants", "default,no_postprocessing"]) == 0
    assert str(out / "quality_study.md") in capsys.readouterr().out
    rows = list(csv.DictReader((out / "quality_study.csv").open(encoding="utf-8")))
    assert [r["variant"] for r in rows] == ["default", "no_postprocessing"] and {r["seed"] for r in rows} == {"3"}
    for row in rows:
        assert 0.0 <= float(row["dice"]) <= 1.0 and 0.0 <= float(row["rule_dice"]) <= 1.0
    assert rows[0]["rule_dice"] == rows[1]["rule_dice"]  # the rule on the same cases
    seed = out / "seed_3"
    assert (seed / "default" / "postprocessing.json").is_file()  # train fitted it
    assert not (seed / "no_postprocessing").exists()  # the variant reused the default's model
    table = (out / "quality_study.md").read_text(encoding="utf-8")
    assert "| default |" in table and "| no_postprocessing |" in table and "| threshold rule |" in table


def test_unknown_variants_and_a_reused_model_not_trained_first_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        run_quality_study(tmp_path, [0], ["bigger"])
    with pytest.raises(ValueError, match="list that one before it"):
        run_quality_study(tmp_path, [0], ["tta"])


def test_the_summary_gives_the_mean_and_spread_over_seeds():
    base = {"avd_ml": 1.0, "lesion_f1": 0.5, "rule_dice": 0.3, "rule_avd_ml": 2.0, "rule_lesion_f1": 0.2}
    rows = [{"seed": s, "variant": "default", "dice": d, **base} for s, d in ((0, 0.5), (1, 0.7))]
    (entry,) = summarise(rows)
    assert entry["seeds"] == 2 and entry["dice_mean"] == pytest.approx(0.6)
    assert entry["dice_sd"] == pytest.approx(0.1414, abs=1e-3) and entry["margin_mean"] == pytest.approx(0.3)
