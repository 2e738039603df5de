"""The depth study: the UNet++ article's comparison of FCN-8s, U-Nets of depth L1 to L4 and UNet++ with deep
supervision pruned to L1..L4, on the embedded synthetic data, each model run as a user runs it (``synth``,
``prepare``, ``train``, ``predict``, ``evaluate``).

Every network trains under the same budget (``epochs`` epochs, the learning rate decaying over them, and
``budget_s`` seconds as a cap that stops a network too slow for them) with the same recipe: the demo's CPU-budget
plans (:func:`pipeline.planning.cpu_budget.cpu_budget_plans`), fold 0 held out, the same learning rate and seed, on
each synthetic seed. The depth-``d`` U-Net keeps the first ``d`` levels of those
plans (strides, kernels, widths); the UNet++ is trained once at depth 4 with deep supervision and predicted at each
pruning level (``network_def#inference_level``: only the nodes of the pruned sub-network are computed, with the same
weights); FCN-8s (and, when asked, 16s and 32s) pools five times with the plans' strides, kernels and widths, with
instance norm as the U-Nets have; the U-Nets, as the article's, have no deep supervision.
Every model predicts with the argmax (``predict --postprocessing none``): a post-processing fitted for one network
(or one pruning level) would favour it. Parameters are counted on the network that predicts (the pruned
sub-network for UNet++), and the inference time per case is measured side by side
(:mod:`pipeline.studies.inference_timing`).

Outputs (:mod:`pipeline.studies.depth_report`, :mod:`pipeline.studies.depth_figure`): ``depth_study.csv`` (one row
per model), ``depth_study_runs.csv`` (one row per seed and model), ``depth_study.md`` and ``depth_study.png``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_MODELS", "MODELS", "TRAININGS", "Model", "Training", "predict_overrides", "run_depth_study",
           "study_plans", "train_overrides"]

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
LEARNING_RATE = 0.003
# the depth of the pruned UNet++ and of the deepest U-Net: the article's L1..L4
UNETPP_DEPTH = 4
FCN_POOLINGS = 5
# the smoke test's sizes on top of the quick CPU-budget plans: 4 mm voxels in-plane, 32x32 one-slice patches
QUICK_PLANS = {"resample_pixdim": [4.0, 4.0, 0.0], "patch_size": [32, 32, 1], "batch_size": 2}
QUICK_TRAIN_SET = ("cache_rate=0.0",)


@dataclass(frozen=True)
class Training:
    """One network trained per seed.

    Attributes:
        key: its run folder name.
        bundle: the bundle folder under ``bundles/``.
        family: ``unet``, ``unetpp`` or ``fcn``.
        depth: downsamplings (U-Net, UNet++); FCN: its five poolings.
        fcn_variant: ``8s``, ``16s`` or ``32s`` for an FCN.
    """

    key: str
    bundle: str
    family: str
    depth: int
    fcn_variant: str | None = None


@dataclass(frozen=True)
class Model:
    """One row of the study: a trained network as it predicts.

    Attributes:
        key: its name in ``--models`` and the tables.
        label: its name in the figure and the markdown.
        training: the :class:`Training` whose weights it uses.
        level: the UNet++ pruning level it predicts with (``None``: the whole network).
    """

    key: str
    label: str
    training: str
    level: int | None = None


TRAININGS = {
    t.key: t
    for t in (
        Training("fcn8s", "isles_unet", "fcn", FCN_POOLINGS, "8s"),
        Training("fcn16s", "isles_unet", "fcn", FCN_POOLINGS, "16s"),
        Training("fcn32s", "isles_unet", "fcn", FCN_POOLINGS, "32s"),
        *(Training(f"unet_l{d}", "isles_unet", "unet", d) for d in range(1, UNETPP_DEPTH + 1)),
        Training("unetpp", "isles_unetplusplus", "unetpp", UNETPP_DEPTH),
    )
}
MODELS = {
    m.key: m
    for m in (
        Model("fcn8s", "FCN-8s", "fcn8s"),
        Model("fcn16s", "FCN-16s", "fcn16s"),
        Model("fcn32s", "FCN-32s", "fcn32s"),
        *(Model(f"unet_l{d}", f"U-Net L{d}", f"unet_l{d}") for d in range(1, UNETPP_DEPTH + 1)),
        *(Model(f"unetpp_l{level}", f"UNet++ L{level}", "unetpp", level) for level in range(1, UNETPP_DEPTH + 1)),
    )
}
DEFAULT_MODELS = ("fcn8s", "unet_l1", "unet_l2", "unet_l3", "unet_l4", "unetpp_l1", "unetpp_l2", "unetpp_l3",
                  "unetpp_l4")


def _cli(argv: list[str]) -> None:
    from pipeline.__main__ import main

    status = main(argv)
    if status != 0:
        raise RuntimeError(f"depth study: `python -m pipeline {' '.join(argv)}` failed with exit status {status}")


def study_plans(plans: Mapping[str, Any], quick: bool = False) -> dict[str, Any]:
    """The plans every model of the study is cut from: the demo's CPU-budget plans (the smoke test's sizes with
    ``quick``).

    Args:
        plans: ``prepare``'s plans (:func:`pipeline.planning.plans.load_plans`).
        quick: tiny widths, 4 mm voxels in-plane and 32x32 patches.

    Returns:
        The sized plans.

    Raises:
        ValueError: the plans have fewer levels than the deepest model needs (:data:`FCN_POOLINGS`).
    """
    from pipeline.planning.cpu_budget import cpu_budget_plans

    sized = cpu_budget_plans(plans, quick=quick)
    if quick:
        sized.update(QUICK_PLANS)
    if len(sized["strides"]) < max(FCN_POOLINGS, UNETPP_DEPTH):
        raise ValueError(f"the plans have {len(sized['strides'])} levels; the study needs {FCN_POOLINGS} "
                         "(the FCN's poolings)")
    return sized


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def train_overrides(training: Training, plans: Mapping[str, Any]) -> list[str]:
    """The ``--set`` overrides that make ``training``'s network from the study plans (what the bundle's
    ``network_def`` and the planned keys must say), for ``train`` and, where the trained plans do not record them,
    ``predict``.

    Args:
        training: the network.
        plans: the study plans (:func:`study_plans`).

    Returns:
        ``KEY=VALUE`` strings.
    """
    strides, kernels, features = plans["strides"], plans["kernel_sizes"], plans["features"]
    if training.family == "fcn":
        network = {
            "_target_": "pipeline.networks.FCN", "variant": training.fcn_variant, "spatial_dims": 3,
            "in_channels": "@in_channels", "out_channels": "@out_channels", "strides": strides[:FCN_POOLINGS],
            "kernel_sizes": kernels[:FCN_POOLINGS], "fc_kernel_size": kernels[min(FCN_POOLINGS, len(kernels) - 1)],
            "features": features[:FCN_POOLINGS], "fc_features": 2 * features[FCN_POOLINGS - 1],
            # instance norm as the U-Nets have: the comparison is of the architectures, not of the normalisation
            "norm": "instance",
        }
        # the top-level strides set the inference window (sliding_window_roi), as for the U-Nets
        return [f"strides={_json(strides[:FCN_POOLINGS])}", f"network_def={_json(network)}"]
    depth = training.depth
    sets = [f"strides={_json(strides[:depth])}", f"kernel_sizes={_json(kernels[:depth + 1])}",
            f"features={_json(features[:depth + 1])}"]
    if training.family == "unet":
        # the article's U-Nets have no deep supervision (the bundle's has); 0 rather than False: the trained plans
        # keep the value as text, and both predict's check (JSON) and monai.bundle (python-fire) read 0 as false
        sets.append("network_def#deep_supervision=0")
    return sets


def predict_overrides(model: Model, plans: Mapping[str, Any]) -> list[str]:
    """The ``--set`` overrides ``predict`` needs for ``model`` beyond the trained plans beside its checkpoint: the
    FCN's whole ``network_def`` and the UNet++ pruning level.

    Args:
        model: the row.
        plans: the study plans.

    Returns:
        ``KEY=VALUE`` strings.
    """
    sets = _network_def_override(TRAININGS[model.training], plans)
    if model.level is not None:
        sets.append(f"network_def#inference_level={model.level}")
    return sets


def _network_def_override(training: Training, plans: Mapping[str, Any]) -> list[str]:
    """The override that replaces the bundle's whole ``network_def`` (the FCN's), which the trained plans do not
    record (they keep the planned keys and ``network_def#...`` overrides only)."""
    return [s for s in train_overrides(training, plans) if s.startswith("network_def=")]


def _sets(values: Sequence[str]) -> list[str]:
    return [a for s in values for a in ("--set", s)]


def _trained_epochs(checkpoint: Path) -> float:
    """Epochs the run completed, from the trainer state in its final checkpoint (ignite keeps the iteration count
    and the epoch length); NaN when the checkpoint does not say."""
    import torch

    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    trainer = state.get("trainer") if isinstance(state, Mapping) else None
    if not isinstance(trainer, Mapping) or not trainer.get("epoch_length"):
        return float("nan")
    return float(int(trainer["iteration"]) // int(trainer["epoch_length"]))


def _summary_figures(summary_path: Path) -> dict[str, float]:
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    methods = summary["methods"]
    model = methods["model"]["metrics"]
    figures = {"dice": model["dice"]["mean"], "avd_ml": model["abs_volume_diff_ml"]["mean"],
               "lesion_f1": model["lesion_f1"]["mean"]}
    if "threshold" in methods:
        figures["rule_dice"] = methods["threshold"]["metrics"]["dice"]["mean"]
    return figures


def _default_runtime() -> str:
    """What ``predict``'s default runtime (``auto``) runs the networks in on the CPU."""
    import torch

    from pipeline.runtimes import default_runtime

    return default_runtime(torch.device("cpu"))


def _count_parameters(network: Any) -> int:
    from pipeline.networks import count_parameters

    return int(count_parameters(network))


@dataclass
class _Seed:
    """One seed's data and plans: ``work`` (its folder), ``data`` (the synthetic dataset), ``datalist`` and the
    study ``plans`` with the file they were written to."""

    seed: int
    work: Path
    data: Path
    datalist: Path
    plans: dict[str, Any]
    plans_path: Path


def _prepare_seed(out: Path, seed: int, cases: int, test_cases: int, quick: bool) -> _Seed:
    """``synth`` and ``prepare`` one seed, and write the study plans cut from ``prepare``'s plans."""
    from pipeline.planning.plans import load_plans, write_plans

    work = out / f"seed_{seed}"
    data, datalist = work / "data", work / "datalist.json"
    _cli(["synth", str(data), "--cases", str(cases), "--test-cases", str(test_cases), "--seed", str(seed),
          "--overwrite"])
    _cli(["prepare", "--root", str(data), "--out", str(datalist), "--folds", "5", "--seed", str(seed)])
    plans = study_plans(load_plans(work / "plans.json"), quick)
    return _Seed(seed, work, data, datalist, plans, write_plans(plans, work / "study_plans.json"))


def _train(prepared: _Seed, training: Training, epochs: int, budget_s: float, quick: bool) -> dict[str, Any]:
    """``train`` one network afresh on fold 0's complement; returns its checkpoint, wall seconds and epochs done."""
    run = prepared.work / training.key
    sets = [f"learning_rate={LEARNING_RATE}", f"time_budget_s={budget_s}", f"seed={prepared.seed}",
            # no validation: every model predicts with its last checkpoint, so validating would only spend budget
            f"val_interval={epochs + 1}", *(QUICK_TRAIN_SET if quick else ()),
            *train_overrides(training, prepared.plans)]
    if run.exists():  # train resumes a run folder it finds: this study starts every network afresh
        shutil.rmtree(run)
    started = time.perf_counter()
    _cli(["train", "--bundle", str(BUNDLES / training.bundle), "--datalist", str(prepared.datalist), "--fold", "0",
          "--epochs", str(epochs), "--output", str(run), "--plans", str(prepared.plans_path), "--postprocessing",
          "none", *_sets(sets)])
    checkpoint = run / "models" / "last.pt"
    return {"checkpoint": checkpoint, "train_s": round(time.perf_counter() - started, 1),
            "epochs": _trained_epochs(checkpoint)}


def _predict_and_evaluate(prepared: _Seed, model: Model, checkpoint: Path, baseline: bool) -> dict[str, float]:
    """``predict`` the test split with one model (argmax) and ``evaluate`` it; returns its mean figures."""
    training = TRAININGS[model.training]
    predictions = prepared.work / f"predictions_{model.key}"
    _cli(["predict", "--bundle", str(BUNDLES / training.bundle), "--input", str(prepared.datalist), "--checkpoint",
          str(checkpoint), "--output", str(predictions), "--overwrite", "--postprocessing", "none",
          *_sets(predict_overrides(model, prepared.plans))])
    metrics = prepared.work / f"eval_{model.key}" / "metrics.csv"
    _cli(["evaluate", "--pred", str(predictions), "--truth", str(prepared.data / "TESTING_GROUND_TRUTH"), "--images",
          str(prepared.datalist), *(["--baseline", "threshold"] if baseline else []), "--out", str(metrics)])
    return _summary_figures(metrics.with_name("metrics_summary.json"))


def _inference_settings(prepared: _Seed, training: Training, checkpoint: Path) -> list[tuple[str, Any]]:
    """The config settings ``predict`` gives the bundle's inference config for ``checkpoint``: the datalist and its
    channels, the architecture from the trained plans beside it, and the study's ``network_def`` override."""
    from pipeline.planning.bundle_settings import ARCHITECTURE_KEYS, plan_overrides, trained_network_overrides

    datalist = json.loads(prepared.datalist.read_text(encoding="utf-8"))
    trained_plans = checkpoint.parent / "trained_plans.json"
    return [("datalist", str(prepared.datalist)), ("channels", list(datalist.get("channels") or [])),
            *plan_overrides(trained_plans, ARCHITECTURE_KEYS), *trained_network_overrides(trained_plans),
            *[tuple(s.split("=", 1)) for s in _network_def_override(training, prepared.plans)]]


def _predicting_networks(prepared: _Seed, models: Sequence[Model], checkpoints: Mapping[str, Path], profile: Path):
    """Each model's network as ``predict`` builds it (the pruned sub-network for a UNet++ level), its weights
    loaded, with its inference window (:class:`pipeline.studies.inference_timing.TimedModel`)."""
    from pipeline.studies.inference_timing import TimedModel, load_trained_network

    loaded = {key: load_trained_network(BUNDLES / TRAININGS[key].bundle, profile,
                                        _inference_settings(prepared, TRAININGS[key], checkpoint), checkpoint)
              for key, checkpoint in checkpoints.items()}
    networks = {}
    for model in models:
        trained = loaded[model.training]
        if model.level is not None:
            trained = TimedModel(trained.network.prune(model.level).eval(), trained.roi_size)
        networks[model.key] = trained
    return networks


def _profile(prepared: _Seed) -> Path:
    from pipeline.bundles import profile_path

    return profile_path(json.loads(prepared.datalist.read_text(encoding="utf-8")))


def _time_models(prepared: _Seed, models: Sequence[Model], checkpoints: Mapping[str, Path], repeats: int,
                 log) -> tuple[dict[str, float], dict[str, int]]:
    """Mean inference seconds per test case of every model, side by side, and each model's parameters.

    The time of a case depends on its shape, chiefly its slice count (the in-plane size varies a little with the
    spacing): one case of each slice count is timed and weighted by the number of test cases with that count, which
    estimates the mean over the whole test split at a fraction of the cost.
    """
    from pipeline.studies.inference_timing import preprocessed_images, time_per_case

    profile = _profile(prepared)
    networks = _predicting_networks(prepared, models, checkpoints, profile)
    # every network of the study reads the test cases alike (same channels, same plans' spacing)
    first = TRAININGS[models[0].training]
    settings = _inference_settings(prepared, first, checkpoints[first.key])
    images = preprocessed_images(BUNDLES / first.bundle, profile, settings, prepared.datalist, "testing")
    counts: dict[int, int] = {}
    chosen: dict[int, tuple[str, Any]] = {}
    for case_id, image in images:
        slices = int(image.shape[-1])
        counts[slices] = counts.get(slices, 0) + 1
        chosen.setdefault(slices, (case_id, image))
    log(f"depth study: timing {len(models)} models side by side on {len(chosen)} test case(s), one per slice count "
        f"({', '.join(f'{n} x {s}' for s, n in sorted(counts.items()))} slices)")
    seconds = time_per_case(networks, list(chosen.values()), repeats=repeats)
    weights = [counts[s] for s in chosen]
    mean = {name: sum(w * t for w, t in zip(weights, times)) / sum(weights) for name, times in seconds.items()}
    return mean, {name: _count_parameters(n.network) for name, n in networks.items()}


def _run_seed(out: Path, seed: int, models: Sequence[Model], cases: int, test_cases: int, epochs: int,
              budget_s: float, quick: bool, timing_repeats: int | None, log) -> list[dict[str, Any]]:
    """One seed: data, every training, every model's prediction and evaluation, parameters, and (when
    ``timing_repeats``) the side-by-side inference times."""
    prepared = _prepare_seed(out, seed, cases, test_cases, quick)
    trained = {key: _train(prepared, TRAININGS[key], epochs, budget_s, quick)
               for key in dict.fromkeys(m.training for m in models)}
    rows = []
    for index, model in enumerate(models):
        # the rule is scored once: the test cases are the same for every model
        figures = _predict_and_evaluate(prepared, model, trained[model.training]["checkpoint"], baseline=index == 0)
        rows.append({"seed": seed, "model": model.key, "training": model.training, **figures})
    for row in rows:
        row["rule_dice"] = rows[0].get("rule_dice", float("nan"))
    checkpoints = {key: info["checkpoint"] for key, info in trained.items()}
    if timing_repeats:
        seconds, parameters = _time_models(prepared, models, checkpoints, timing_repeats, log)
    else:
        seconds = {}
        parameters = {name: _count_parameters(n.network)
                      for name, n in _predicting_networks(prepared, models, checkpoints, _profile(prepared)).items()}
    for row, model in zip(rows, models):
        info = trained[model.training]
        row.update(parameters=parameters[model.key], seconds_per_case=seconds.get(model.key, float("nan")),
                   train_s=info["train_s"], epochs=info["epochs"])
    return rows


def run_depth_study(out: str | Path, seeds: Sequence[int] = (0, 1), models: Sequence[str] = DEFAULT_MODELS,
                    cases: int = 24, test_cases: int = 16, epochs: int = 40, budget_s: float = 180.0,
                    quick: bool = False, timing_repeats: int = 1, log=print) -> list[dict[str, Any]]:
    """Run the study into ``out`` and write its tables, figure and summary after each seed.

    Args:
        out: the study folder (one ``seed_<s>/`` per seed: data, datalist, plans, runs, predictions, evaluations).
        seeds: the synthetic seeds (data, folds and training seed).
        models: names from :data:`MODELS`, in the order of the tables.
        cases, test_cases: training and held-out test slabs per seed.
        epochs, budget_s: most epochs and seconds of training per network, the same for every network (the learning
            rate decays over ``epochs``; the time budget is a cap that stops a network early if it is too slow).
        quick: tiny networks on 4 mm voxels (a smoke test of the study, not a measurement).
        timing_repeats: timed runs per model and case in the side-by-side timing, which runs on the first seed only
            (the networks are the same on every seed).
        log: where progress lines go.

    Returns:
        The per-seed rows (``seed``, ``model``, ``training``, ``dice``, ``avd_ml``, ``lesion_f1``, ``rule_dice``,
        ``parameters``, ``seconds_per_case`` (NaN on the seeds not timed), ``train_s``, ``epochs``).

    Raises:
        ValueError: an unknown or repeated model, no seeds, fewer than one timing repeat, or plans too shallow for
            the models.
        RuntimeError: a step failed (its command and exit status are named).
    """
    from pipeline.studies.depth_figure import write_figure
    from pipeline.studies.depth_report import write_outputs

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(map(repr, unknown))}; choose from {', '.join(MODELS)}")
    if len(set(models)) != len(models) or not models:
        raise ValueError(f"list each model once: {', '.join(models) or '(none)'}")
    if not seeds:
        raise ValueError("give at least one seed")
    if timing_repeats < 1:
        raise ValueError(f"timing_repeats must be at least 1, got {timing_repeats}")
    chosen = [MODELS[m] for m in models]
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    setup = {"cases": cases, "test_cases": test_cases, "epochs": epochs, "budget_s": budget_s, "quick": quick,
             "learning_rate": LEARNING_RATE, "runtime": _default_runtime(), "timed_seed": int(seeds[0])}
    for index, seed in enumerate(seeds):
        rows += _run_seed(out, int(seed), chosen, cases, test_cases, epochs, budget_s, quick,
                          timing_repeats if index == 0 else None, log)
        summary = write_outputs(out, rows, {m.key: m.label for m in chosen}, setup, time.perf_counter() - started)
        write_figure(out / "depth_study.png", summary)
    return rows
