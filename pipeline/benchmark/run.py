"""One benchmark run: :func:`run_benchmark` (the fixtures, every scenario, the verdicts and the Markdown file)
and :class:`BenchmarkResult`, everything it measured."""

from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.benchmark.bundle import _architecture, _bundle_parser, _network, _state_dict
from pipeline.benchmark.child import _tuned_malloc_timings
from pipeline.benchmark.fixtures import _model_channels, _synthetic_dataset, _test_cases, _training_plans
from pipeline.benchmark.markdown import format_results
from pipeline.benchmark.measurement import Timing, peak_rss_bytes
from pipeline.benchmark.options import BenchmarkOptions, _display_path, command_line
from pipeline.benchmark.scenarios import (
    CASE_SHAPES,
    IN_CHANNELS_TIMING,
    QUICK_CASE_SHAPES,
    QUICK_ROI,
    _dice_rows,
    _pruning_rows,
    bundle_inferer,
    describe_inferer,
    inference_timings,
)
from pipeline.benchmark.targets import judge
from pipeline.benchmark.timed_training import TrainingStats, _train
from pipeline.planning.cpu_budget import QUICK_FEATURES


@dataclass
class BenchmarkResult:
    """Everything the benchmark measured; :func:`format_results` turns it into Markdown.

    Attributes:
        environment: machine, versions, command, date.
        model: how the trained model was obtained and its architecture.
        roi_size: the tile/window size both inferers use (the bundle's inference ``roi_size``).
        inference: per case shape (e.g. ``"5x256x256x8"``) -> method -> :class:`Timing`.
        tuned_inference: the same for ours, MONAI, the whole volume and the default network, in a child process
            with :data:`MALLOC_ENV` (None where not measured; ``tuned_note`` says why or how).
        patch_size: the training patch (MONAI's ``roi_size`` in the ``monai_patch`` row).
        default_network: a description of the bundle's default UNet++ timed for the ``case_seconds`` target.
        dice: per test case: case id, shape, Dice of each method against the truth and ours against MONAI,
            and the end-to-end seconds of each method.
        pruning: per level: parameters, median seconds, mean Dice.
        training: the :class:`TrainingStats`.
        ratios: the headline ratios (all finite numbers in a sound run).
        targets: per target: (what, figure, met).
        peak_rss_bytes: the process's peak resident memory over the whole run.
        elapsed_s: the run's duration.
        quick: a ``--quick`` smoke run.
        ours_description: what the bundles' inferer is for the trained network (:func:`describe_inferer`).
    """

    environment: dict[str, Any]
    model: dict[str, Any]
    roi_size: list[int]
    inference: dict[str, dict[str, Timing]]
    tuned_inference: dict[str, dict[str, Timing]] | None
    tuned_note: str
    patch_size: list[int]
    default_network: str
    dice: list[dict[str, Any]]
    pruning: list[dict[str, Any]]
    training: TrainingStats
    ratios: dict[str, float]
    targets: list[tuple[str, str, bool]]
    peak_rss_bytes: int
    elapsed_s: float
    quick: bool
    ours_description: str = ""


def _environment(options: BenchmarkOptions, device: torch.device) -> dict[str, Any]:
    import monai

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    environment = {
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "device": str(device),
        "command": command_line(options),
        "seed": options.seed,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if device.type == "cuda":
        environment["gpu"] = torch.cuda.get_device_name(device)
    return environment


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def run_benchmark(options: BenchmarkOptions, log: Callable[[str], None] = print) -> BenchmarkResult:
    """Run the benchmark and write ``options.out`` (Markdown).

    Args:
        options: what to measure (see :class:`BenchmarkOptions`).
        log: where progress lines go.

    Returns:
        The :class:`BenchmarkResult` that was written.

    Raises:
        FileNotFoundError: no such checkpoint, plans or bundle.
        ValueError: an unusable checkpoint or device, or no test case with ground truth.
        CaseError, LayoutError: the synthetic data could not be prepared (from
            :func:`~pipeline.data.prepare.prepare_dataset`).
    """
    from pipeline.bundles import check_bundle, profile_path
    from pipeline.io import atomic_write_text
    from pipeline.planning.bundle_settings import (
        ARCHITECTURE_KEYS, PLANNED_KEYS, TRAINED_PLANS, plan_overrides, trained_network_overrides,
    )

    run_started = time.perf_counter()
    bundle = check_bundle(options.bundle, "train.json")
    device = _resolve_device(options.device)
    repeats = options.resolved_repeats()
    cases, test_cases = options.resolved_cases()
    environment = _environment(options, device)
    log(f"benchmark: {environment['command']}")
    log(f"  {environment['cpu']}, {environment['usable_cpus']} usable CPUs, torch {environment['torch']} "
        f"({environment['torch_threads']} threads), MONAI {environment['monai']}, device {device}")

    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch:
        workdir = Path(options.workdir).resolve() if options.workdir else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        datalist = _synthetic_dataset(workdir, cases, test_cases, options.seed, _model_channels(options), log)
        profile = profile_path(json.loads(datalist.read_text()))
        # every config the benchmark parses stacks the datalist's channels, as `train` and `predict` pass them
        channels = [("channels", list(json.loads(datalist.read_text())["channels"]))]
        log(f"benchmark: synthetic data ({cases} training, {test_cases} test cases, seed {options.seed}) "
            f"in {time.perf_counter() - started:.0f} s")

        # The trained model: the given checkpoint, or a short training through the bundle.
        if options.checkpoint is not None:
            plans = Path(options.plans) if options.plans else Path(options.checkpoint).parent / TRAINED_PLANS
            if not plans.is_file():
                raise FileNotFoundError(f"plans {str(plans)!r} not found: give --plans, the plans the checkpoint was trained with")
            network = trained_network_overrides(plans)
            architecture = channels + plan_overrides(plans, ARCHITECTURE_KEYS) + network
            training_overrides = channels + plan_overrides(plans, PLANNED_KEYS) + network
            parser = _bundle_parser(bundle, "inference.json", profile, architecture)
            model = _network(parser, device=device)
            model.load_state_dict(_state_dict(Path(options.checkpoint)))
            log(f"benchmark: timing {options.resolved_train_budget():.0f} s of training (the checkpoint is not changed)")
            _, training = _train(bundle, datalist, profile, workdir / "training", training_overrides,
                                 options.resolved_train_budget(), device)
            source = f"checkpoint `{_display_path(options.checkpoint)}` (plans `{_display_path(plans)}`)"
        else:
            plans = _training_plans(workdir, options.quick)
            architecture = channels + plan_overrides(plans, ARCHITECTURE_KEYS)
            budget = options.resolved_train_budget()
            log(f"benchmark: training a UNet++ through {bundle.name}/configs/train.json "
                f"({'one epoch' if budget is None else f'{budget:.0f} s'})")
            model, training = _train(bundle, datalist, profile, workdir / "training",
                                     channels + plan_overrides(plans, PLANNED_KEYS), budget, device)
            source = (f"trained by this run through `{bundle.name}/configs/train.json` for {training.epochs} epoch(s), "
                      f"{training.wall_s:.0f} s, on {cases} synthetic cases (fold 0 held out)")
        model = model.to(device).eval()
        log(f"benchmark: model {_architecture(model)}; training {training.iterations_per_s:.2f} it/s, "
            f"{100 * training.data_share:.1f}% waiting for data")

        inference_parser = _bundle_parser(bundle, "inference.json", profile, architecture)
        roi = QUICK_ROI if options.quick else [int(r) for r in inference_parser.get_parsed_content("inferer#roi_size")]
        patch = [int(p) for p in dict(plan_overrides(plans, ("patch_size",))).get("patch_size", roi)]
        default_parser = _bundle_parser(bundle, "inference.json", profile, [])
        if options.quick:
            default_parser["features"] = QUICK_FEATURES[: len(default_parser["strides"]) + 1]
        default_description = _architecture(_network(default_parser, IN_CHANNELS_TIMING))
        shapes = QUICK_CASE_SHAPES if options.quick else CASE_SHAPES
        spec = {"bundle": str(bundle), "profile": str(profile), "architecture": [list(a) for a in architecture],
                "roi": roi, "patch": patch, "shapes": [list(s) for s in shapes], "repeats": repeats,
                "device": str(device), "quick": options.quick}
        inference = inference_timings(spec, log)
        log("benchmark: the same rows with glibc malloc kept from unmapping big blocks (a child process)")
        tuned, tuned_note = _tuned_malloc_timings(spec)

        with torch.inference_mode():
            test = _test_cases(bundle, datalist, profile, architecture)
            dice = _dice_rows(model, test, roi, device)
            log(f"benchmark: Dice on {len(dice)} test cases: ours {np.mean([r['dice_ours'] for r in dice]):.3f}, "
                f"MONAI {np.mean([r['dice_monai'] for r in dice]):.3f}")
            pruning = _pruning_rows(model, test, dice, shapes[0], roi, repeats, device)
            for row in dice:
                row.pop("ours_mask", None)

    result = BenchmarkResult(
        environment=environment,
        model={"source": source, "architecture": _architecture(model)},
        roi_size=list(roi),
        inference=inference,
        tuned_inference=tuned,
        tuned_note=tuned_note,
        patch_size=patch,
        default_network=default_description,
        dice=dice,
        pruning=pruning,
        training=training,
        ratios={},
        targets=[],
        peak_rss_bytes=peak_rss_bytes(),
        elapsed_s=0.0,
        quick=options.quick,
        ours_description=describe_inferer(bundle_inferer(model, roi, device)),
    )
    judge(result)
    result.elapsed_s = time.perf_counter() - run_started
    text = format_results(result)
    out = Path(options.out)
    atomic_write_text(out, text)
    log(text)
    log(f"benchmark: wrote {out} in {result.elapsed_s / 60:.1f} min")
    return result
