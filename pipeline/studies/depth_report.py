"""The depth study's tables and summary: the per-model summary over seeds (:func:`summarise`), what the numbers
show (:func:`findings`, every statement computed from the table), and the files (:func:`write_outputs`):
``depth_study.csv``, ``depth_study_runs.csv`` and ``depth_study.md``."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DICE_TOLERANCE", "SUMMARY_COLUMNS", "findings", "format_parameters", "summarise", "write_outputs"]

# a pruned UNet++ level "keeps" the full network's Dice when it is at most this much below it
DICE_TOLERANCE = 0.01
SUMMARY_COLUMNS = ("model", "label", "training", "seeds", "dice_mean", "dice_sd", "dice_min", "dice_max",
                   "avd_ml_mean", "lesion_f1_mean", "parameters", "seconds_per_case", "train_s_mean", "epochs_mean",
                   "rule_dice_mean")


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else float("nan")


def summarise(rows: Sequence[Mapping[str, Any]], labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """Per model, the mean and spread over seeds of its figures.

    Args:
        rows: the per-seed rows of :func:`pipeline.studies.depth.run_depth_study`.
        labels: model key -> its label, in the order of the table (models without rows are left out).

    Returns:
        One dict per model with the keys of :data:`SUMMARY_COLUMNS`: ``dice_sd`` is the standard deviation over
        seeds (NaN for one seed), ``parameters`` the count of the network that predicts, ``seconds_per_case`` the
        side-by-side measurement (on the seeds that have one; NaN if none).
    """
    summary = []
    for key, label in labels.items():
        mine = [r for r in rows if r["model"] == key]
        if not mine:
            continue
        dice_mean, dice_sd = _mean_sd([r["dice"] for r in mine])
        timed = [r["seconds_per_case"] for r in mine if not math.isnan(r["seconds_per_case"])]
        summary.append({
            "model": key, "label": label, "training": mine[0].get("training", key), "seeds": len(mine),
            "dice_mean": dice_mean, "dice_sd": dice_sd,
            "dice_min": float(min(r["dice"] for r in mine)), "dice_max": float(max(r["dice"] for r in mine)),
            "avd_ml_mean": _mean_sd([r["avd_ml"] for r in mine])[0],
            "lesion_f1_mean": _mean_sd([r["lesion_f1"] for r in mine])[0],
            "parameters": int(round(_mean_sd([r["parameters"] for r in mine])[0])),
            "seconds_per_case": float(np.mean(timed)) if timed else float("nan"),
            "train_s_mean": _mean_sd([r["train_s"] for r in mine])[0],
            "epochs_mean": _mean_sd([r["epochs"] for r in mine])[0],
            "rule_dice_mean": _mean_sd([r["rule_dice"] for r in mine])[0],
        })
    return summary


def format_parameters(count: float) -> str:
    """A parameter count as the tables and the figure print it: ``1.23M``, ``456k`` or ``789``."""
    if count >= 1e6:
        return f"{count / 1e6:.2f}M"
    if count >= 1e3:
        return f"{count / 1e3:.0f}k" if count >= 1e4 else f"{count / 1e3:.1f}k"
    return str(int(count))


def _pm(mean: float, sd: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" if math.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _signed(value: float) -> str:
    """``+0.012``; a difference that rounds to zero is ``+0.000``, never ``-0.000``."""
    return f"{value if round(value, 3) != 0 else 0.0:+.3f}"


def _family(summary: Sequence[Mapping[str, Any]], prefix: str) -> list[tuple[int, Mapping[str, Any]]]:
    """``(level, entry)`` of the models ``<prefix><level>`` (e.g. ``unet_l``), by level."""
    found = []
    for entry in summary:
        rest = entry["model"][len(prefix):]
        if entry["model"].startswith(prefix) and rest.isdigit():
            found.append((int(rest), entry))
    return sorted(found, key=lambda item: item[0])


def _compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """How the Dice difference of ``a`` over ``b`` stands against the spread over seeds."""
    if a["seeds"] < 2 or b["seeds"] < 2:
        return ""
    spread = max(a["dice_sd"], b["dice_sd"])
    difference = abs(a["dice_mean"] - b["dice_mean"])
    return (f" (within the spread over seeds, sd up to {spread:.3f})" if difference <= spread
            else f" (beyond the spread over seeds, sd up to {spread:.3f})")


def _unet_findings(unets: list[tuple[int, Mapping[str, Any]]]) -> list[str]:
    levels = ", ".join(f"L{level} {e['dice_mean']:.3f}" for level, e in unets)
    best_level, best = max(unets, key=lambda item: item[1]["dice_mean"])
    deepest_level, deepest = unets[-1]
    dice = [e["dice_mean"] for _, e in unets]
    rising = all(b > a for a, b in zip(dice, dice[1:]))
    line = f"- U-Net by depth, mean test Dice: {levels}. "
    if best_level == deepest_level:
        line += f"The deepest, L{deepest_level}, scores best"
        line += "; Dice rises with every level." if rising else ", though Dice does not rise with every level."
    else:
        line += (f"The best depth is L{best_level}; the deepest, L{deepest_level}, scores "
                 f"{best['dice_mean'] - deepest['dice_mean']:.3f} less{_compare(best, deepest)}: deeper is not "
                 "better here.")
    return [line]


def _pruning_findings(pruned: list[tuple[int, Mapping[str, Any]]]) -> list[str]:
    full_level, full = pruned[-1]
    parts = []
    for level, e in pruned[:-1]:
        parts.append(f"L{level} {e['dice_mean']:.3f} ({e['parameters'] / full['parameters']:.0%} of the parameters, "
                     f"{e['seconds_per_case'] / full['seconds_per_case']:.0%} of the time per case)")
    line = (f"- UNet++ trained once with deep supervision, mean test Dice at L{full_level} {full['dice_mean']:.3f}; "
            f"pruned: {'; '.join(parts)}. ")
    keeping = [(level, e) for level, e in pruned[:-1] if e["dice_mean"] >= full["dice_mean"] - DICE_TOLERANCE]
    if keeping:
        level, e = keeping[0]
        line += (f"The smallest level within {DICE_TOLERANCE} Dice of L{full_level} is L{level}: "
                 f"{format_parameters(e['parameters'])} instead of {format_parameters(full['parameters'])} "
                 f"parameters, {e['seconds_per_case']:.3f} s instead of {full['seconds_per_case']:.3f} s "
                 "per case.")
    else:
        line += f"No pruned level comes within {DICE_TOLERANCE} Dice of L{full_level}."
    return [line]


def _nested_findings(unets: list[tuple[int, Mapping[str, Any]]],
                     pruned: list[tuple[int, Mapping[str, Any]]]) -> list[str]:
    unet = dict(unets)
    pairs = [(level, e, unet[level]) for level, e in pruned if level in unet]
    if not pairs:
        return []
    differences = ", ".join(f"L{level} {_signed(p['dice_mean'] - u['dice_mean'])}" for level, p, u in pairs)
    ahead = sum(1 for _, p, u in pairs if p["dice_mean"] > u["dice_mean"])
    level, p, u = pairs[-1]
    return [f"- UNet++ minus U-Net of the same depth, mean test Dice: {differences} (UNet++ ahead at {ahead} of "
            f"{len(pairs)} depths). At L{level} the UNet++ has {p['parameters'] / u['parameters']:.2f}x the U-Net's "
            f"parameters and takes {p['seconds_per_case'] / u['seconds_per_case']:.2f}x its time per case"
            f"{_compare(p, u)}."]


def findings(summary: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the table shows, as markdown bullet lines computed from it (no conclusion is written in advance).

    Args:
        summary: :func:`summarise`'s entries.

    Returns:
        Lines: the U-Net depths, the UNet++ pruning levels, UNet++ against U-Net at each depth, the FCNs against the
        best U-Net, networks the time cap stopped early, the best model against the threshold rule, and what the
        spread over seeds allows.
    """
    if not summary:
        return []
    lines: list[str] = []
    unets = _family(summary, "unet_l")
    pruned = _family(summary, "unetpp_l")
    if len(unets) > 1:
        lines += _unet_findings(unets)
    if len(pruned) > 1:
        lines += _pruning_findings(pruned)
    lines += _nested_findings(unets, pruned)
    best_unet = max((e for _, e in unets), key=lambda e: e["dice_mean"], default=None)
    for fcn in (e for e in summary if e["model"].startswith("fcn")):
        if best_unet is not None:
            lines.append(f"- {fcn['label']}: mean test Dice {fcn['dice_mean']:.3f}, "
                         f"{_signed(fcn['dice_mean'] - best_unet['dice_mean'])} against the best U-Net "
                         f"({best_unet['label']}), with {fcn['parameters'] / best_unet['parameters']:.2f}x its "
                         f"parameters{_compare(fcn, best_unet)}.")
    # one entry per training: the UNet++ levels share theirs
    trained: dict[str, tuple[str, float]] = {}
    for e in summary:
        if not math.isnan(e["epochs_mean"]):
            name = e.get("training") or e["model"]
            label = e["label"] if name == e["model"] else f"{e['label'].split(' L')[0]} (all levels)"
            trained.setdefault(name, (label, e["epochs_mean"]))
    most = max((epochs for _, epochs in trained.values()), default=float("nan"))
    short = [f"{label} at {epochs:g}" for label, epochs in trained.values() if epochs < most]
    if short:
        lines.append(f"- Not every network trained as long: the time cap stopped {', '.join(short)} epochs (mean "
                     f"over seeds); the others did {most:g}.")
    best = max(summary, key=lambda e: e["dice_mean"])
    lines.append(f"- Best model: {best['label']}, mean test Dice {best['dice_mean']:.3f}; the clinical threshold rule "
                 f"scores {best['rule_dice_mean']:.3f} on the same cases.")
    seeds = min(e["seeds"] for e in summary)
    if seeds < 2:
        lines.append("- One seed: there is no spread over seeds, so none of these differences is tested.")
    else:
        lines.append(f"- Spread: the standard deviation of the per-seed mean over {seeds} seeds; a difference no "
                     "larger than the larger standard deviation of the two models is called within the spread.")
    return lines


def _csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buffer.getvalue()


def _markdown(summary: Sequence[Mapping[str, Any]], setup: Mapping[str, Any], seeds: Sequence[int],
              seconds: float) -> str:
    quick = " (--quick: a smoke test, not a measurement)" if setup.get("quick") else ""
    md = [f"# Depth study: seeds {', '.join(map(str, seeds))}{quick}", "",
          f"FCN, U-Nets of depth L1-L4 and UNet++ (deep supervision, pruned to L1-L4) on the synthetic ISLES 2018 "
          f"data: {setup['cases']} training slabs (fold 0 held out, not used) and {setup['test_cases']} test slabs "
          f"per seed; every network trained for {setup['epochs']} epoch(s) (a time cap of {setup['budget_s']:g} s), "
          f"learning rate {setup['learning_rate']:g}, the demo's CPU-budget plans; every model predicts with the "
          "argmax (no post-processing). The UNet++ rows are one training per seed, predicted at each pruning level.",
          "",
          "Mean over seeds (± standard deviation over seeds) of each seed's test-split mean Dice; parameters of the "
          "network that predicts (the pruned sub-network for UNet++); inference seconds per case measured side by "
          f"side in one process on seed {setup.get('timed_seed', 0)}: one test case per slice count, weighted by "
          "the number of test cases with that count (the bundle's inferer with the networks in "
          f"{setup.get('runtime', 'torch')}, as predict runs them; loading, preprocessing and writing left out); "
          "training: wall seconds of the `train` command and epochs done within the budget.", "",
          "| model | mean Dice | Dice min-max | AVD mL | lesion F1 | parameters | s per case | train s | epochs |",
          "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        md.append(f"| {s['label']} | {_pm(s['dice_mean'], s['dice_sd'])} | {s['dice_min']:.3f}-{s['dice_max']:.3f} | "
                  f"{s['avd_ml_mean']:.1f} | {s['lesion_f1_mean']:.3f} | {format_parameters(s['parameters'])} | "
                  f"{s['seconds_per_case']:.3f} | {s['train_s_mean']:.0f} | "
                  f"{s['epochs_mean']:.1f} |")
    if summary:
        md.append(f"| threshold rule | {summary[0]['rule_dice_mean']:.3f} | | | | | | | |")
    md += ["", "![Dice and inference time per model](depth_study.png)", "", "## What the table shows", "",
           *findings(summary), "", f"Run time: {seconds / 60:.1f} min."]
    return "\n".join(md) + "\n"


def write_outputs(out: Path, rows: Sequence[Mapping[str, Any]], labels: Mapping[str, str],
                  setup: Mapping[str, Any], seconds: float) -> list[dict[str, Any]]:
    """Write ``depth_study.csv`` (the summary), ``depth_study_runs.csv`` (one row per seed and model) and
    ``depth_study.md`` (the table and :func:`findings`) into ``out``, each atomically.

    Args:
        out: the study folder.
        rows: the per-seed rows.
        labels: model key -> label, in table order.
        setup: ``cases``, ``test_cases``, ``epochs``, ``budget_s``, ``learning_rate``, ``quick``, ``runtime`` (what
            the networks ran in) and ``timed_seed``.
        seconds: the study's run time so far.

    Returns:
        The summary (:func:`summarise`).
    """
    from pipeline.io import atomic_write_text

    summary = summarise(rows, labels)
    run_columns = list(dict.fromkeys(k for r in rows for k in r))
    atomic_write_text(out / "depth_study_runs.csv", _csv_text(rows, run_columns))
    atomic_write_text(out / "depth_study.csv", _csv_text(summary, SUMMARY_COLUMNS))
    seeds = list(dict.fromkeys(r["seed"] for r in rows))
    atomic_write_text(out / "depth_study.md", _markdown(summary, setup, seeds, seconds))
    return summary
