"""The quality study: the default recipe and its variants, each run as a user runs it (``synth``, ``prepare``,
``train``, ``postprocess``, ``predict``, ``evaluate``), on several synthetic seeds with held-out test splits, and a
table of mean Dice, absolute volume difference and lesion F1 per variant with the spread over seeds, beside the
clinical threshold rule on the same cases.

A variant changes one lever of the default (:data:`VARIANTS`); variants that only predict differently (no
post-processing, TTA) reuse the default's trained model, so each lever is measured on the same weights.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_VARIANTS", "QUICK_NETWORK", "VARIANTS", "Variant", "run_quality_study", "summarise", "write_tables"]

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "isles_unetplusplus"
# the tiny network of --quick (the smoke test), set on every variant
QUICK_NETWORK = ("features=[4,4,8,8,8]", "patch_size=[32,32,2]", "pixdim=[4.0,4.0,0.0]", "cache_rate=0.0",
                 "batch_size=2")


@dataclass(frozen=True)
class Variant:
    """One recipe of the study.

    Attributes:
        name: its row in the table.
        description: what it changes against the default.
        channels: ``prepare --channels`` (``None``: the demo's, CBF, CBV, MTT, Tmax and CT).
        plans: ``budget`` (the demo's CPU-budget plans from ``prepare``'s) or ``none`` (the bundle's own settings).
        configuration: the plans' configuration to train (``None``: their default).
        postprocessing: predict with the post-processing fitted on the validation fold.
        tta: predict with test-time augmentation.
        model_of: reuse the model trained for this variant instead of training one.
        train_set: extra ``train --set`` overrides.
    """

    name: str
    description: str
    channels: str | None = None
    plans: str = "budget"
    configuration: str | None = None
    postprocessing: bool = True
    tta: bool = False
    model_of: str | None = None
    train_set: tuple[str, ...] = field(default_factory=tuple)


VARIANTS = {
    v.name: v
    for v in (
        Variant("default", "plans, CBF/CBV/MTT/Tmax/CT, one fold, post-processing fitted on its validation fold"),
        Variant("no_postprocessing", "the default's model, mask = argmax", postprocessing=False, model_of="default"),
        Variant("tta", "the default's model, mirrored test-time augmentation", tta=True, model_of="default"),
        Variant("no_ct", "without the CT channel (CBF/CBV/MTT/Tmax)", channels="CBF,CBV,MTT,Tmax"),
        Variant("no_plans", "the bundle's own network and patch instead of the plans", plans="none"),
        Variant("2d", "the plans' 2d configuration: one slice per patch (128x128x1, batch 8)", configuration="2d"),
        Variant("2d_whole_slice", "2d on whole 256x256 slices (batch 2)", configuration="2d",
                train_set=("patch_size=[256,256,1]", "batch_size=2")),
        Variant("whole_slab", "3d on whole 256x256x2 slabs (batch 2)", train_set=("patch_size=[256,256,2]",
                                                                                  "batch_size=2")),
        Variant("budget_schedule", "the polynomial learning rate decays to zero at the end of the time budget",
                train_set=("fit_schedule_to_budget=True",)),
        Variant("kernels_331", "3d with (3, 3, 1) kernels at every level", train_set=(
            "kernel_sizes=[[3,3,1],[3,3,1],[3,3,1],[3,3,1],[3,3,1],[3,3,1]]",)),
        # tile-independent normalisations (their inference takes whole slabs): against "2d", which has instance norm
        Variant("2d_batch_norm", "2d with batch norm", configuration="2d", train_set=("network_def#norm=batch",)),
        Variant("2d_batch_norm_batch16", "2d with batch norm, batch 16", configuration="2d",
                train_set=("network_def#norm=batch", "batch_size=16")),
        Variant("2d_batch_renorm", "2d with batch renormalisation", configuration="2d",
                train_set=("network_def#norm=batch_renorm",)),
        Variant("2d_channel_layer_norm", "2d with channel-wise layer norm", configuration="2d",
                train_set=("network_def#norm=channel_layer",)),
    )
}
DEFAULT_VARIANTS = ("default", "no_postprocessing", "tta", "no_ct", "no_plans")


def _cli(argv: list[str]) -> None:
    from pipeline.__main__ import main

    status = main(argv)
    if status != 0:
        raise RuntimeError(f"quality study: `python -m pipeline {' '.join(argv)}` failed with exit status {status}")


def _summary_figures(summary_path: Path) -> dict[str, float]:
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    model = summary["methods"]["model"]["metrics"]
    rule = summary["methods"]["threshold"]["metrics"]
    return {"dice": model["dice"]["mean"], "avd_ml": model["abs_volume_diff_ml"]["mean"],
            "lesion_f1": model["lesion_f1"]["mean"], "rule_dice": rule["dice"]["mean"],
            "rule_avd_ml": rule["abs_volume_diff_ml"]["mean"], "rule_lesion_f1": rule["lesion_f1"]["mean"]}


def _validation_dice(run: Path) -> float:
    """The model's mean Dice on its validation fold as post-processed (``postprocessing.json``); NaN without one."""
    path = run / "postprocessing.json"
    if not path.is_file():
        return float("nan")
    return float(json.loads(path.read_text(encoding="utf-8"))["validation"]["chosen_mean_dice"])


def _run_seed(out: Path, seed: int, variants: Sequence[Variant], cases: int, test_cases: int, epochs: int,
              budget_s: float, quick: bool) -> list[dict[str, Any]]:
    from pipeline.planning.cpu_budget import DEMO_CHANNELS, cpu_budget_plans
    from pipeline.planning.plans import load_plans, write_plans

    work = out / f"seed_{seed}"
    data = work / "data"
    _cli(["synth", str(data), "--cases", str(cases), "--test-cases", str(test_cases), "--seed", str(seed),
          "--overwrite"])
    rows = []
    trained: dict[str, Path] = {}
    for variant in variants:
        started = time.perf_counter()
        channels = variant.channels or DEMO_CHANNELS
        datalist = work / f"datalist_{channels.replace(',', '_')}.json"
        if not datalist.is_file():
            chosen = ["--channels", variant.channels] if variant.channels else []  # default: what prepare picks
            _cli(["prepare", "--root", str(data), "--out", str(datalist), "--folds", "5", "--seed", str(seed),
                  *chosen])
        network = list(QUICK_NETWORK) if quick else []
        run = trained.get(variant.model_of or variant.name)
        if run is None:
            run = work / variant.name
            plans = ["--plans", "none"]
            if variant.plans == "budget" and not quick:
                configuration = variant.configuration
                budget = write_plans(cpu_budget_plans(load_plans(datalist.parent / "plans.json", configuration)),
                                     work / f"budget_plans_{channels.replace(',', '_')}_{configuration or 'default'}.json")
                plans = ["--plans", str(budget)]
            sets = ["learning_rate=0.003", f"val_interval={epochs}", f"time_budget_s={budget_s}", *network,
                    *variant.train_set]
            _cli(["train", "--bundle", str(BUNDLE), "--datalist", str(datalist), "--fold", "0", "--epochs",
                  str(epochs), "--output", str(run), *plans, *[a for s in sets for a in ("--set", s)]])
            trained[variant.name] = run
        predictions = work / f"predictions_{variant.name}"
        flags = ["--tta"] if variant.tta else []
        flags += [] if variant.postprocessing else ["--postprocessing", "none"]
        predict_sets = [s for s in network if not s.startswith(("cache_rate", "batch_size"))]
        _cli(["predict", "--bundle", str(BUNDLE), "--input", str(datalist), "--model", str(run), "--output",
              str(predictions), "--overwrite", *flags, *[a for s in predict_sets for a in ("--set", s)]])
        metrics = work / f"eval_{variant.name}" / "metrics.csv"
        _cli(["evaluate", "--pred", str(predictions), "--truth", str(data / "TESTING_GROUND_TRUTH"), "--images",
              str(datalist), "--baseline", "threshold", "--out", str(metrics)])
        figures = _summary_figures(metrics.with_name("metrics_summary.json"))
        rows.append({"seed": seed, "variant": variant.name, **figures, "val_dice": _validation_dice(run),
                     "seconds": round(time.perf_counter() - started, 1)})
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant, the mean and standard deviation over seeds of each figure (and the rule's on the same cases).

    Args:
        rows: the per-seed rows of :func:`run_quality_study`.

    Returns:
        One dict per variant, in first-seen order: ``variant``, ``seeds``, ``<figure>_mean``, ``<figure>_sd``
        and ``margin_mean`` (model minus rule mean Dice).
    """
    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        entry: dict[str, Any] = {"variant": name, "seeds": len(mine)}
        for key in ("dice", "avd_ml", "lesion_f1", "val_dice", "rule_dice", "rule_avd_ml", "rule_lesion_f1"):
            values = np.array([r.get(key, float("nan")) for r in mine], dtype=float)
            entry[f"{key}_mean"] = float(values.mean())
            entry[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        entry["margin_mean"] = entry["dice_mean"] - entry["rule_dice_mean"]
        out.append(entry)
    return out


def write_tables(out: Path, rows: Sequence[dict[str, Any]], seconds: float) -> tuple[Path, Path]:
    """Write ``quality_study.csv`` (one row per seed and variant) and ``quality_study.md`` (the summary).

    Returns:
        The two paths.
    """
    from pipeline.io import atomic_write_text

    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
    csv_path = atomic_write_text(out / "quality_study.csv", "\n".join(lines) + "\n")
    summary = summarise(rows)
    seeds = sorted({r["seed"] for r in rows})
    md = [f"# Quality study: seeds {', '.join(map(str, seeds))}", "",
          "Mean over seeds (± standard deviation over seeds) of each seed's test-split mean; the threshold rule on "
          "the same cases. The last column is the model's mean Dice on its own validation fold (post-processed): "
          "what a lever is kept or dropped on.", "",
          "| variant | mean Dice | AVD mL | lesion F1 | Dice minus rule | validation fold Dice |",
          "|---|---|---|---|---|---|"]
    for s in summary:
        md.append(f"| {s['variant']} | {s['dice_mean']:.3f} ± {s['dice_sd']:.3f} | {s['avd_ml_mean']:.1f} ± "
                  f"{s['avd_ml_sd']:.1f} | {s['lesion_f1_mean']:.3f} ± {s['lesion_f1_sd']:.3f} | "
                  f"{s['margin_mean']:+.3f} | {s['val_dice_mean']:.3f} |")
    s = summary[0]
    md.append(f"| threshold rule | {s['rule_dice_mean']:.3f} ± {s['rule_dice_sd']:.3f} | {s['rule_avd_ml_mean']:.1f} ± "
              f"{s['rule_avd_ml_sd']:.1f} | {s['rule_lesion_f1_mean']:.3f} ± {s['rule_lesion_f1_sd']:.3f} | | |")
    md += ["", f"Run time: {seconds / 60:.1f} min."]
    md_path = atomic_write_text(out / "quality_study.md", "\n".join(md) + "\n")
    return csv_path, md_path


def run_quality_study(out: str | Path, seeds: Sequence[int] = (0, 1, 2), variants: Sequence[str] = DEFAULT_VARIANTS,
                      cases: int = 24, test_cases: int = 16, epochs: int = 40, budget_s: float = 360.0,
                      quick: bool = False) -> list[dict[str, Any]]:
    """Run the study into ``out`` and write its tables (:func:`write_tables`).

    Args:
        out: the study folder (one ``seed_<s>/`` per seed: data, datalists, runs, predictions, evaluations).
        seeds: the synthetic seeds.
        variants: names from :data:`VARIANTS`; a variant that reuses another's model needs it listed before.
        cases, test_cases: training and held-out test slabs per seed.
        epochs, budget_s: most epochs and seconds of training per model (the demo's budget by default).
        quick: the tiny network and the bundle's own patch settings (a smoke test of the study, not a measurement).

    Returns:
        The per-seed rows.

    Raises:
        ValueError: an unknown variant, or one whose model is not trained before it.
        RuntimeError: a step failed (its command and exit status are named).
    """
    chosen = []
    for name in variants:
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        variant = VARIANTS[name]
        if variant.model_of and variant.model_of not in [v.name for v in chosen]:
            raise ValueError(f"variant {name!r} reuses the model of {variant.model_of!r}: list that one before it")
        chosen.append(variant)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = []
    for seed in seeds:
        rows += _run_seed(out, int(seed), chosen, cases, test_cases, epochs, budget_s, quick)
        write_tables(out, rows, time.perf_counter() - started)
    return rows
