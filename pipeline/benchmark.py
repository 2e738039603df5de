"""``python -m pipeline benchmark``: the performance table, written to ``benchmarks/results.md``.

Every comparison is measured side by side in one run: the methods of a row are run in turn within each
repeat (the order rotating from repeat to repeat), and the table gives medians over the repeats and their
ratios, so that a machine shared with other work slows all of them alike. The sections:

- inference per ISLES-2018-style case (5 channels x 256x256x8 and x22; a network of the trained
  architecture with ``in_channels=5`` and random weights): end to end (a preprocessed tensor in, softmax
  probabilities out) and the time spent inside the network's forward calls, for the bundles' inferer
  (:func:`~pipeline.inferers.segmentation_inferer` for that network, ``amp`` at its default for the device),
  MONAI's ``SlidingWindowInferer(overlap=0.5, mode="gaussian")`` in float32 on the same network, weights and
  ``roi_size``, :class:`~pipeline.inferers.OverlapTileInferer` with grown tiles and one whole-volume pass;
- Dice on trained weights: both inferers (and grown tiles) on the synthetic test cases, against the ground
  truth and against each other;
- the tiling overhead: ``OverlapTileInferer`` (grown tiles) / one whole-volume pass on the same volume;
- UNet++ pruned to every level: parameters, time and Dice;
- training through the bundle's ``train.json`` (MONAI ``ConfigWorkflow``): iterations per second and the
  share of step time spent waiting for data (Ignite ``GET_BATCH_*`` against ``ITERATION_*`` events);
- peak memory: resident set size (and GPU memory on a GPU).

Trained weights come from ``--checkpoint`` (with the ``trained_plans.json`` beside it, as ``predict`` reads
them) or, by default, from a short training of a small UNet++ through the bundle on a synthetic dataset
that the benchmark writes itself (``synth`` + ``prepare``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.allocator import MALLOC_ENV

__all__ = [
    "BenchmarkOptions",
    "BenchmarkResult",
    "NetworkClock",
    "PeakMemory",
    "SECTIONS",
    "TARGETS",
    "command_line",
    "format_results",
    "options_from_args",
    "run_benchmark",
    "time_side_by_side",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = PROJECT_ROOT / "bundles" / "isles_unetplusplus"
DEFAULT_OUT = PROJECT_ROOT / "benchmarks" / "results.md"
# The section titles of results.md, in order.
SECTIONS = (
    "Machine",
    "Targets",
    "Inference per case",
    "Dice on trained weights",
    "Tiling overhead",
    "UNet++ pruning",
    "Training",
    "Peak memory",
    "How it was measured",
)
# The targets of the scale-out and speed issue, on 2 CPU cores (benchmark figures, not timed tests).
TARGETS = {
    "speedup": 2.0,  # our inference at least 2x faster than MONAI's default ...
    "dice_tolerance": 0.01,  # ... at a mean Dice within 0.01
    "tiling_overhead": 1.3,  # tiled / one whole-volume pass
    "case_seconds": 2.0,  # the default UNet++ end to end for a 5x256x256x8 case
    "data_wait_share": 0.10,  # share of training step time spent waiting for data
}
IN_CHANNELS_TIMING = 5  # ISLES 2018: CT + CBF, CBV, MTT, Tmax
CASE_SHAPES = ((256, 256, 8), (256, 256, 22))
QUICK_CASE_SHAPES = ((64, 64, 8), (64, 64, 22))
QUICK_ROI = [32, 32, -1]
QUICK_FEATURES = [4, 4, 8, 8, 16, 16]


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------
@dataclass
class BenchmarkOptions:
    """What ``python -m pipeline benchmark`` measures and where it writes.

    Attributes:
        out: the Markdown file written (default ``benchmarks/results.md`` of the project).
        quick: tiny sizes and one repeat (a smoke run; the figures mean nothing).
        repeats: repeats of every timed row (medians are reported); default 3, 1 with ``quick``.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        checkpoint: trained weights (a bundle checkpoint with a ``model`` entry, or a bare state dict);
            None trains a small UNet++ through the bundle first.
        plans: the plans the checkpoint was trained with; default ``trained_plans.json`` beside it.
        workdir: where the synthetic data and the training run go; None uses a temporary folder.
        cases: synthetic training cases (default 24 when training, 8 with a checkpoint; 3 with ``quick``).
        test_cases: synthetic test cases with ground truth for the Dice rows (default 8; 2 with ``quick``).
        seed: seed of the synthetic data (default 1: other patients than the demo's seed 0).
        train_budget: seconds of training (default 300 when training the model, 60 when a checkpoint is given
            and training is only timed; one epoch with ``quick``).
        bundle: the UNet++ bundle folder.
    """

    out: Path = DEFAULT_OUT
    quick: bool = False
    repeats: int | None = None
    device: str = "auto"
    checkpoint: Path | None = None
    plans: Path | None = None
    workdir: Path | None = None
    cases: int | None = None
    test_cases: int | None = None
    seed: int = 1
    train_budget: float | None = None
    bundle: Path = DEFAULT_BUNDLE

    def resolved_repeats(self) -> int:
        """Repeats of every timed row: ``repeats``, else 1 with ``quick`` and 3 otherwise."""
        return int(self.repeats) if self.repeats is not None else (1 if self.quick else 3)

    def resolved_cases(self) -> tuple[int, int]:
        """(training cases, test cases) of the synthetic dataset."""
        cases = self.cases if self.cases is not None else (3 if self.quick else (8 if self.checkpoint else 24))
        tests = self.test_cases if self.test_cases is not None else (2 if self.quick else 8)
        return int(cases), int(tests)

    def resolved_train_budget(self) -> float | None:
        """Seconds of training: None (one epoch) with ``quick``, else ``train_budget`` or its default."""
        if self.quick and self.train_budget is None:
            return None
        if self.train_budget is not None:
            return float(self.train_budget)
        return 60.0 if self.checkpoint else 300.0


def options_from_args(args: argparse.Namespace) -> BenchmarkOptions:
    """The :class:`BenchmarkOptions` of the arguments of ``python -m pipeline benchmark`` (see ``pipeline.__main__``).

    Args:
        args: the parsed arguments (``out``, ``quick``, ``repeats``, ``device``, ``checkpoint``, ``plans``,
            ``workdir``, ``cases``, ``test_cases``, ``seed``, ``train_budget``, ``bundle``; None for defaults).

    Returns:
        The options.

    Raises:
        ValueError: ``--repeats`` below 1.
        FileNotFoundError: a ``--checkpoint`` that is not a file.
    """
    options = BenchmarkOptions(
        out=Path(args.out) if args.out else DEFAULT_OUT, quick=bool(args.quick), repeats=args.repeats, device=args.device,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None, plans=Path(args.plans) if args.plans else None,
        workdir=Path(args.workdir) if args.workdir else None, cases=args.cases, test_cases=args.test_cases,
        seed=int(args.seed), train_budget=args.train_budget, bundle=Path(args.bundle) if args.bundle else DEFAULT_BUNDLE,
    )
    if options.resolved_repeats() < 1:
        raise ValueError(f"--repeats must be at least 1, got {options.repeats}")
    if options.checkpoint is not None and not options.checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {str(options.checkpoint)!r} not found")
    return options


def command_line(options: BenchmarkOptions) -> str:
    """The ``python -m pipeline benchmark ...`` line that repeats this run (options that differ from the defaults).

    Args:
        options: the run's options.

    Returns:
        One shell-quoted line.
    """
    words = ["python", "-m", "pipeline", "benchmark"]
    default = BenchmarkOptions()
    if options.quick:
        words.append("--quick")
    for name in ("repeats", "cases", "test_cases", "seed", "train_budget"):
        value = getattr(options, name)
        if value is not None and value != getattr(default, name):
            words += [f"--{name.replace('_', '-')}", str(value)]
    if options.device != default.device:
        words += ["--device", options.device]
    for name in ("checkpoint", "plans", "workdir"):
        value = getattr(options, name)
        if value is not None:
            words += [f"--{name}", _display_path(value)]
    if Path(options.bundle).resolve() != DEFAULT_BUNDLE:
        words += ["--bundle", _display_path(options.bundle)]
    if Path(options.out).resolve() != DEFAULT_OUT:
        words += ["--out", _display_path(options.out)]
    return shlex.join(words)


def _display_path(path: Path | str) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NetworkClock:
    """Time spent inside a network's forward calls, through forward hooks (the network itself is not wrapped,
    so an inferer sees exactly the same module and attributes).

    Args:
        network: the module to time.
        device: the device it runs on (CUDA work is synchronised before each reading).

    Use as a context manager; ``seconds`` and ``calls`` accumulate while it is open.
    """

    def __init__(self, network: nn.Module, device: torch.device) -> None:
        self.network = network
        self.device = torch.device(device)
        self.seconds = 0.0
        self.calls = 0
        self._started: float | None = None
        self._handles: list[Any] = []

    def _before(self, module: nn.Module, inputs: Any) -> None:
        _synchronize(self.device)
        self._started = time.perf_counter()

    def _after(self, module: nn.Module, inputs: Any, output: Any) -> None:
        _synchronize(self.device)
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self.calls += 1
            self._started = None

    def __enter__(self) -> "NetworkClock":
        self._handles = [
            self.network.register_forward_pre_hook(self._before),
            self.network.register_forward_hook(self._after),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _rss_bytes() -> int | None:
    """The resident set size of this process now (Linux ``/proc/self/statm``), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _release_free_memory() -> None:
    """Hand memory that the C allocator keeps after ``free`` back to the system (glibc ``malloc_trim``), so that
    the resident set size before a measured call does not already hold the memory the call is going to need."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_bytes() -> int:
    """The peak resident set size of this process so far (``resource.getrusage``), in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


class PeakMemory:
    """Peak memory of a block of code beyond what was in use when it started.

    The resident set size is sampled every ``interval_s`` by a background thread (``/proc/self/statm``; the
    process-wide ``getrusage`` peak cannot be reset, so it cannot give the peak of one call), after the memory
    the C allocator kept from earlier work has been handed back (glibc ``malloc_trim``); on a CUDA device the
    allocator's peak is read as well.

    Args:
        device: the device the code runs on.
        interval_s: the sampling interval.

    Attributes (after the block): ``rss_bytes`` (None where ``/proc`` is missing) and ``gpu_bytes``
    (None off CUDA).
    """

    def __init__(self, device: torch.device, interval_s: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.rss_bytes: int | None = None
        self.gpu_bytes: int | None = None
        self._stop = threading.Event()
        self._peak = 0
        self._start = 0
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            now = _rss_bytes()
            if now is not None and now > self._peak:
                self._peak = now

    def __enter__(self) -> "PeakMemory":
        _release_free_memory()
        start = _rss_bytes()
        if start is not None:
            self._start = self._peak = start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._gpu_start = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.gpu_bytes = torch.cuda.max_memory_allocated(self.device) - self._gpu_start
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            now = _rss_bytes()
            self.rss_bytes = max(self._peak, now or 0) - self._start


@dataclass
class Timing:
    """Measurements of one method in a side-by-side row.

    Attributes:
        total_s: end-to-end seconds per timed repeat.
        network_s: seconds inside the network's forward calls per timed repeat.
        calls: network calls per timed repeat.
        page_faults: minor page faults of the process per timed repeat (first touches of fresh memory).
        rss_bytes: peak resident memory beyond the start, in the untimed memory pass (None where not measurable).
        gpu_bytes: peak GPU memory beyond the start, in the memory pass (None off CUDA).
    """

    total_s: list[float] = field(default_factory=list)
    network_s: list[float] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    page_faults: list[int] = field(default_factory=list)
    rss_bytes: int | None = None
    gpu_bytes: int | None = None

    @property
    def total(self) -> float:
        """Median end-to-end seconds."""
        return statistics.median(self.total_s)

    @property
    def network(self) -> float:
        """Median seconds inside the network."""
        return statistics.median(self.network_s)

    def to_dict(self) -> dict[str, Any]:
        """The measurements as plain JSON-able values."""
        return {k: getattr(self, k) for k in ("total_s", "network_s", "calls", "page_faults", "rss_bytes", "gpu_bytes")}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Timing":
        """The inverse of :meth:`to_dict`."""
        return cls(**{k: values[k] for k in ("total_s", "network_s", "calls", "page_faults", "rss_bytes", "gpu_bytes")})


def _minor_faults() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def time_side_by_side(
    methods: Mapping[str, tuple[nn.Module, Callable[[], Any]]], repeats: int, device: torch.device,
    memory_pass: bool = True,
) -> dict[str, Timing]:
    """Run every method once per repeat, in an order that rotates from repeat to repeat, and time each call.

    Args:
        methods: name -> (the network it runs, a callable doing the whole work). The network's forward calls
            are timed by a :class:`NetworkClock`.
        repeats: how many timed runs every method gets.
        device: the device the methods run on.
        memory_pass: first run every method once, untimed, under :class:`PeakMemory` (this is also the warm-up;
            memory is not sampled during the timed runs, whose allocations it would otherwise slow down).

    Returns:
        name -> :class:`Timing`.
    """
    names = list(methods)
    timings = {name: Timing() for name in names}
    if memory_pass:
        for name in names:
            with PeakMemory(device) as memory:
                methods[name][1]()
            timings[name].rss_bytes, timings[name].gpu_bytes = memory.rss_bytes, memory.gpu_bytes
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            network, run = methods[name]
            with NetworkClock(network, device) as clock:
                faults = _minor_faults()
                _synchronize(device)
                started = time.perf_counter()
                run()
                _synchronize(device)
                elapsed = time.perf_counter() - started
                faults = _minor_faults() - faults
            timing = timings[name]
            timing.total_s.append(elapsed)
            timing.network_s.append(clock.seconds)
            timing.calls.append(clock.calls)
            timing.page_faults.append(faults)
    return timings


# ---------------------------------------------------------------------------------------------
# Bundle pieces
# ---------------------------------------------------------------------------------------------
def _bundle_parser(bundle: Path, config: str, profile: Path, overrides: Sequence[tuple[str, Any]]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / config), str(profile)])
    for key, value in overrides:
        parser[key] = value
    return parser


def _network(parser, in_channels: int | None = None, device: torch.device | None = None) -> nn.Module:
    """A fresh network from a parsed config's ``network_def`` (optionally with other input channels), in eval mode."""
    config = parser.get("network_def")
    config = dict(config)
    if in_channels is not None:
        config["in_channels"] = in_channels
    parser["benchmark_network"] = config
    network = parser.get_parsed_content("benchmark_network", lazy=False)
    return network.to(device or "cpu").eval()


def _state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The network weights of a bundle checkpoint (its ``model`` entry) or of a bare state dict."""
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        return dict(loaded["model"])
    if isinstance(loaded, Mapping) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return dict(loaded)
    raise ValueError(f"{checkpoint}: neither a bundle checkpoint with a 'model' entry nor a state dict")


def _architecture(network: nn.Module) -> str:
    features = getattr(network, "features", None)
    depth = getattr(network, "depth", None)
    strides = getattr(network, "strides", None)
    parameters = sum(p.numel() for p in network.parameters())
    return (f"{type(network).__name__} depth {depth}, features {features}, strides {[list(s) for s in strides or []]}, "
            f"{parameters / 1e6:.2f} M parameters")


def _synthetic_dataset(workdir: Path, cases: int, test_cases: int, seed: int, channels: Sequence[str]) -> Path:
    """Write the synthetic dataset and its datalist/plans with the CLI's own ``synth`` and ``prepare``,
    stacking ``channels`` (those the model is or was trained on)."""
    from pipeline.__main__ import main

    data, datalist = workdir / "data", workdir / "datalist.json"
    if main(["synth", str(data), "--cases", str(cases), "--test-cases", str(test_cases), "--seed", str(seed),
             "--overwrite"]) != 0:
        raise RuntimeError("benchmark: synth failed")
    folds = min(5, max(2, cases))
    if main(["prepare", "--root", str(data), "--out", str(datalist), "--folds", str(folds), "--seed", str(seed),
             "--channels", ",".join(channels)]) != 0:
        raise RuntimeError("benchmark: prepare failed")
    return datalist


def _model_channels(options: "BenchmarkOptions") -> list[str]:
    """The channels of the benchmarked model: those in the checkpoint's plans, else the demo's.

    Raises:
        FileNotFoundError: a checkpoint is given but its plans are not found.
    """
    from pipeline.__main__ import DEMO_CHANNELS
    from pipeline.data.plans import load_plans
    from pipeline.training import TRAINED_PLANS

    if options.checkpoint is None:
        return DEMO_CHANNELS.split(",")
    plans = Path(options.plans) if options.plans else Path(options.checkpoint).parent / TRAINED_PLANS
    if not plans.is_file():
        raise FileNotFoundError(f"plans {str(plans)!r} not found: give --plans, the plans the checkpoint was trained with")
    return list(load_plans(plans).get("channels") or DEMO_CHANNELS.split(","))


def _training_plans(workdir: Path, quick: bool) -> Path:
    """The planned network sized for a short CPU budget (as the demo sizes it), written beside the datalist."""
    from pipeline.data.plans import load_plans, write_plans

    plans = load_plans(workdir / "plans.json")
    depth = len(plans["strides"])
    if quick:
        plans.update(features=QUICK_FEATURES[: depth + 1], patch_size=[64, 64, plans["patch_size"][2]], batch_size=2)
    else:
        plans.update(features=[min(8 * 2**i, 128) for i in range(depth + 1)],
                     patch_size=[128, 128, plans["patch_size"][2]], batch_size=4)
    return write_plans(plans, workdir / "benchmark_plans.json")


@dataclass
class TrainingStats:
    """Per-iteration timings of a training run (Ignite events).

    Attributes:
        data_s: seconds from ``GET_BATCH_STARTED`` to ``GET_BATCH_COMPLETED`` (waiting for the data loader).
        step_s: seconds from ``ITERATION_STARTED`` to ``ITERATION_COMPLETED`` (batch to device, forward,
            loss, backward, optimiser step, iteration handlers).
        setup_s: seconds from building the workflow to the first iteration (parsing, caching the data).
        wall_s: seconds of ``trainer.run()``.
        batch_size, patch_size, samples_per_case: the batches the iterations trained on.
        epochs: epochs completed.
    """

    data_s: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    setup_s: float = 0.0
    wall_s: float = 0.0
    batch_size: int = 0
    patch_size: list[int] = field(default_factory=list)
    samples_per_case: int = 0
    epochs: int = 0

    def measured(self) -> tuple[list[float], list[float]]:
        """The iterations that count: all but the first (warm-up), unless it is the only one."""
        if len(self.step_s) > 1:
            return self.data_s[1:], self.step_s[1:]
        return self.data_s, self.step_s

    @property
    def iterations_per_s(self) -> float:
        """Iterations per second over the measured iterations (data wait + step)."""
        data, step = self.measured()
        total = sum(data) + sum(step)
        return len(step) / total if total > 0 else float("nan")

    @property
    def data_share(self) -> float:
        """Share of the measured iterations' time spent waiting for data."""
        data, step = self.measured()
        total = sum(data) + sum(step)
        return sum(data) / total if total > 0 else float("nan")


def _attach_timers(trainer: Any, stats: TrainingStats) -> None:
    from ignite.engine import Events

    marks: dict[str, float] = {}

    def mark(name: str) -> Callable[[Any], None]:
        def handler(engine: Any) -> None:
            marks[name] = time.perf_counter()
        return handler

    def batch_done(engine: Any) -> None:
        stats.data_s.append(time.perf_counter() - marks["batch"])

    def step_done(engine: Any) -> None:
        stats.step_s.append(time.perf_counter() - marks["step"])

    trainer.add_event_handler(Events.GET_BATCH_STARTED, mark("batch"))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, batch_done)
    trainer.add_event_handler(Events.ITERATION_STARTED, mark("step"))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, step_done)


def _train(
    bundle: Path, datalist: Path, profile: Path, run_dir: Path, overrides: Sequence[tuple[str, Any]],
    budget_s: float | None, device: torch.device,
) -> tuple[nn.Module, TrainingStats]:
    """Train through the bundle's ``train.json`` with MONAI's ``ConfigWorkflow``, timing every iteration.

    Returns:
        The trained network (eval mode) and the :class:`TrainingStats`.
    """
    from monai.bundle import ConfigWorkflow

    started = time.perf_counter()
    epochs = 1 if budget_s is None else 1000
    settings: dict[str, Any] = {
        "datalist": str(datalist), "fold": 0, "ckpt_dir": str(run_dir / "models"),
        "output_dir": str(run_dir / "eval"), "epochs": epochs, "val_interval": epochs + 1, "resume": False,
        "time_budget_s": budget_s, "device": str(device), "learning_rate": 0.003,
    }
    settings.update(dict(overrides))
    workflow = ConfigWorkflow(
        config_file=[str(bundle / "configs" / "train.json"), str(profile)],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **settings,
    )
    workflow.initialize()
    parser = workflow.parser
    stats = TrainingStats(
        batch_size=int(parser.get_parsed_content("batch_size")),
        patch_size=[int(p) for p in parser.get_parsed_content("patch_size")],
        samples_per_case=int(parser.get_parsed_content("samples_per_case")),
    )
    trainer = parser.get_parsed_content("train#trainer")
    _attach_timers(trainer, stats)
    first: dict[str, float] = {}

    def first_iteration(engine: Any) -> None:
        first.setdefault("t", time.perf_counter())

    from ignite.engine import Events

    trainer.add_event_handler(Events.GET_BATCH_STARTED, first_iteration)
    run_started = time.perf_counter()
    workflow.run()
    stats.wall_s = time.perf_counter() - run_started
    stats.setup_s = first.get("t", run_started) - started
    stats.epochs = int(trainer.state.epoch)
    network = parser.get_parsed_content("network")
    workflow.finalize()
    return network.eval(), stats


def _test_cases(bundle: Path, datalist: Path, profile: Path, overrides: Sequence[tuple[str, Any]]) -> list[dict]:
    """The synthetic test cases with their ground truth, through the bundle's validation preprocessing."""
    from pipeline.data.datalist import load_datalist
    from pipeline.evaluation import GROUND_TRUTH_FOLDER, load_cases

    root = Path(json.loads(datalist.read_text()).get("root") or datalist.parent / "data")
    if not root.is_absolute():
        root = (datalist.parent / root).resolve()
    _, truths = load_cases(root / GROUND_TRUTH_FOLDER)
    by_id = {(t.case_id, t.smir_id): t.label for t in truths}
    parser = _bundle_parser(bundle, "train.json", profile, [("datalist", str(datalist)), *overrides])
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    cases = []
    for record in load_datalist(datalist, "testing"):
        label = by_id.get((record["case_id"], record.get("smir_id")))
        if label is None:
            continue
        item = preprocessing(dict(record, label=label))
        image = torch.as_tensor(item["image"]).float()[None]
        truth = torch.as_tensor(item["label"])[0].numpy() > 0.5
        cases.append({"case_id": record["case_id"], "image": image, "label": truth})
    if not cases:
        raise ValueError(f"{datalist}: no test case with ground truth under {root / GROUND_TRUTH_FOLDER}")
    return cases


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------
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
        default_network: a description of the bundle's default UNet++ timed for the 2 s target.
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


def _softmax(y: torch.Tensor) -> torch.Tensor:
    return torch.softmax(y, dim=1)


def bundle_inferer(network: nn.Module, roi: Sequence[int], device: torch.device):
    """The inferer the bundles' ``inference.json`` builds for ``network`` on ``device`` (``amp`` at its default)."""
    from pipeline.inferers import segmentation_inferer
    from pipeline.precision import low_precision_pays_off

    return segmentation_inferer(network, list(roi), device, amp=low_precision_pays_off(device))


def describe_inferer(inferer: Any) -> str:
    """A short description of what :func:`bundle_inferer` chose, for the tables."""
    from monai.inferers import SlidingWindowInferer

    inner = getattr(inferer, "inferer", inferer)
    kind = ("MONAI windows of roi_size (overlap 0.5, gaussian)" if isinstance(inner, SlidingWindowInferer)
            else "`OverlapTileInferer`, grown tiles")
    if getattr(inferer, "enabled", False):
        return f"{kind}, {str(inferer.dtype).replace('torch.', '')} autocast"
    return f"{kind}, float32"


def _inference_methods(
    network: nn.Module, x: torch.Tensor, roi: Sequence[int], patch: Sequence[int] | None = None
) -> dict[str, tuple[nn.Module, Callable]]:
    """The methods compared per case: name -> (network, a call from tensor in to probabilities out)."""
    from monai.inferers import SlidingWindowInferer

    from pipeline.inferers import DEFAULT_MAX_TILE_VOXELS, OverlapTileInferer

    ours = bundle_inferer(network, roi, x.device)
    grown = OverlapTileInferer(roi_size=list(roi), max_tile_voxels=DEFAULT_MAX_TILE_VOXELS)
    monai_default = SlidingWindowInferer(roi_size=list(roi), overlap=0.5, mode="gaussian")
    methods = {
        "ours": (network, lambda: _softmax(ours(x, network))),
        "monai": (network, lambda: _softmax(monai_default(x, network))),
    }
    if patch is not None:
        monai_patch = SlidingWindowInferer(roi_size=list(patch), overlap=0.5, mode="gaussian")
        methods["monai_patch"] = (network, lambda: _softmax(monai_patch(x, network)))
    methods["grown"] = (network, lambda: _softmax(grown(x, network)))
    methods["whole"] = (network, lambda: _softmax(network(x)))
    return methods


CHILD_METHODS = ("ours", "monai", "grown", "whole", "default_ours")


def inference_timings(spec: Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, dict[str, Timing]]:
    """The side-by-side inference rows: per case shape, every method on the same network and input.

    Args:
        spec: ``bundle``, ``profile``, ``architecture`` (config overrides of the trained network), ``roi`` (both
            inferers' ``roi_size``), ``patch`` (the training patch, for MONAI with ``roi_size=patch``; None
            leaves that row out), ``shapes`` (spatial shapes), ``repeats``, ``device``, ``quick`` (tiny default
            network), ``methods`` (names to keep; None keeps all), ``memory_pass`` (see :func:`time_side_by_side`).
        log: where progress lines go.

    Returns:
        ``"5x256x256x8"``-style case name -> method -> :class:`Timing`. ``default_ours`` (our inferer on the
        bundle's default network) is timed on the first shape only.
    """
    device = torch.device(spec["device"])
    bundle, profile = Path(spec["bundle"]), Path(spec["profile"])
    inference_parser = _bundle_parser(bundle, "inference.json", profile, [tuple(a) for a in spec["architecture"]])
    default_parser = _bundle_parser(bundle, "inference.json", profile, [])
    if spec["quick"]:
        default_parser["features"] = QUICK_FEATURES[: len(default_parser["strides"]) + 1]
    torch.manual_seed(0)
    timing_net = _network(inference_parser, IN_CHANNELS_TIMING, device)
    default_net = _network(default_parser, IN_CHANNELS_TIMING, device)
    keep = spec.get("methods")
    shapes = [tuple(int(v) for v in shape) for shape in spec["shapes"]]
    results: dict[str, dict[str, Timing]] = {}
    with torch.inference_mode():
        for shape in shapes:
            torch.manual_seed(1)
            x = torch.randn(1, IN_CHANNELS_TIMING, *shape, device=device)
            methods = _inference_methods(timing_net, x, spec["roi"], spec.get("patch"))
            if shape == shapes[0]:
                methods["default_ours"] = (default_net, _inference_methods(default_net, x, spec["roi"])["ours"][1])
            if keep is not None:
                methods = {name: method for name, method in methods.items() if name in keep}
            name = "x".join(str(s) for s in (IN_CHANNELS_TIMING, *shape))
            results[name] = time_side_by_side(methods, int(spec["repeats"]), device, spec.get("memory_pass", True))
            log(f"benchmark: {name}: " + ", ".join(f"{m} {t.total:.2f} s" for m, t in results[name].items()))
    return results


def _child_main() -> None:
    """Entry of the allocator-comparison child: a JSON spec on stdin, JSON timings as the last stdout line."""
    spec = json.loads(sys.stdin.read())
    torch.set_num_threads(int(spec["threads"]))
    results = inference_timings(spec, log=lambda line: print(line, file=sys.stderr))
    print(json.dumps({name: {m: t.to_dict() for m, t in rows.items()} for name, rows in results.items()}))


def _tuned_malloc_timings(spec: Mapping[str, Any]) -> tuple[dict[str, dict[str, Timing]] | None, str]:
    """The inference rows once more in a child process whose glibc malloc is set by :data:`MALLOC_ENV`.

    Returns:
        (the timings, or None where this is not Linux or the child failed; a note on what happened).
    """
    import subprocess

    if not sys.platform.startswith("linux"):
        return None, "not measured: the malloc settings are glibc's (Linux)"
    env = dict(os.environ, **MALLOC_ENV)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    child_spec = dict(spec, methods=list(CHILD_METHODS), patch=None, memory_pass=False,
                      repeats=int(spec["repeats"]) + 1, threads=torch.get_num_threads())
    command = [sys.executable, "-c", "from pipeline.benchmark import _child_main; _child_main()"]
    done = subprocess.run(command, input=json.dumps(child_spec), capture_output=True, text=True, env=env,
                          cwd=str(PROJECT_ROOT))
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"not measured: the child process failed ({tail})"
    values = json.loads(done.stdout.strip().splitlines()[-1])
    timings = {name: {m: Timing.from_dict(t) for m, t in rows.items()} for name, rows in values.items()}
    for rows in timings.values():  # its first run is the warm-up
        for t in rows.values():
            t.total_s, t.network_s, t.calls, t.page_faults = (
                t.total_s[1:], t.network_s[1:], t.calls[1:], t.page_faults[1:])
    return timings, " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items())


def _mask(probabilities: torch.Tensor) -> np.ndarray:
    return probabilities.argmax(1)[0].cpu().numpy().astype(bool)


def _dice_rows(network: nn.Module, cases: list[dict], roi: list[int], device: torch.device) -> list[dict[str, Any]]:
    """Dice of our inferer, MONAI's and grown tiles on every test case (run side by side per case)."""
    from pipeline.metrics import dice_score

    rows = []
    for case in cases:
        x = case["image"].to(device)
        outputs: dict[str, np.ndarray] = {}
        methods = _inference_methods(network, x, roi)
        chosen = {name: methods[name] for name in ("ours", "monai", "grown")}

        def keep(name: str, run: Callable) -> Callable:
            return lambda: outputs.__setitem__(name, _mask(run()))

        timings = time_side_by_side({n: (net, keep(n, run)) for n, (net, run) in chosen.items()}, 1, device,
                                    memory_pass=False)
        row = {"case_id": case["case_id"], "shape": "x".join(str(s) for s in x.shape[1:])}
        for name in chosen:
            row[f"dice_{name}"] = dice_score(outputs[name], case["label"])
            row[f"seconds_{name}"] = timings[name].total
        row["dice_ours_vs_monai"] = dice_score(outputs["ours"], outputs["monai"])
        row["ours_mask"] = outputs["ours"]
        rows.append(row)
    return rows


def _pruning_rows(
    network: nn.Module, cases: list[dict], dice_rows: list[dict], shape: tuple[int, ...], roi: list[int],
    repeats: int, device: torch.device,
) -> list[dict[str, Any]]:
    """Parameters, time (side by side over the levels) and mean Dice of every pruned level of a UNet++."""
    from pipeline.metrics import dice_score

    depth = int(network.depth)
    counts = network.parameter_counts()
    pruned = {level: network.prune(level).eval() for level in range(1, depth + 1)}
    inferers = {level: bundle_inferer(net, roi, device) for level, net in pruned.items()}
    torch.manual_seed(0)
    x = torch.randn(1, int(network.in_channels), *shape, device=device)
    methods = {f"L{level}": (net, (lambda n=net, i=inferers[level]: _softmax(i(x, n)))) for level, net in pruned.items()}
    timings = time_side_by_side(methods, repeats, device)
    rows = []
    for level, net in pruned.items():
        if level == depth:
            masks = [row["ours_mask"] for row in dice_rows]
        else:
            masks = [_mask(_softmax(inferers[level](case["image"].to(device), net))) for case in cases]
        dice = [dice_score(mask, case["label"]) for mask, case in zip(masks, cases)]
        rows.append({"level": level, "parameters": counts[level], "seconds": timings[f"L{level}"].total,
                     "dice": float(np.mean(dice)), "foreground": int(sum(int(m.sum()) for m in masks))})
    return rows


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
        RuntimeError: the synthetic data could not be written.
    """
    from pipeline.bundles import check_bundle, profile_path
    from pipeline.io import atomic_write_text
    from pipeline.training import ARCHITECTURE_KEYS, PLANNED_KEYS, TRAINED_PLANS, plan_overrides, trained_network_overrides

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
        datalist = _synthetic_dataset(workdir, cases, test_cases, options.seed, _model_channels(options))
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
    _judge(result)
    result.elapsed_s = time.perf_counter() - run_started
    text = format_results(result)
    out = Path(options.out)
    atomic_write_text(out, text)
    log(text)
    log(f"benchmark: wrote {out} in {result.elapsed_s / 60:.1f} min")
    return result


def _judge(result: BenchmarkResult) -> None:
    """Fill ``result.ratios`` and ``result.targets``."""
    ratios: dict[str, float] = {}
    for name, timings in result.inference.items():
        ratios[f"{name} speed-up over MONAI (end to end)"] = timings["monai"].total / timings["ours"].total
        ratios[f"{name} speed-up over MONAI (network only)"] = timings["monai"].network / timings["ours"].network
        ratios[f"{name} speed-up over MONAI with roi_size=patch"] = timings["monai_patch"].total / timings["ours"].total
        ratios[f"{name} tiling overhead (grown tiles / whole)"] = timings["grown"].total / timings["whole"].total
        ratios[f"{name} tiling overhead (MONAI / whole)"] = timings["monai"].total / timings["whole"].total
    for name, timings in (result.tuned_inference or {}).items():
        ratios[f"{name} speed-up over MONAI, tuned malloc"] = timings["monai"].total / timings["ours"].total
        ratios[f"{name} tiling overhead, tuned malloc"] = timings["grown"].total / timings["whole"].total
    mean = {m: float(np.mean([row[f"dice_{m}"] for row in result.dice])) for m in ("ours", "monai", "grown")}
    ratios["Dice difference ours - MONAI"] = mean["ours"] - mean["monai"]
    ratios["Dice ours vs MONAI masks"] = float(np.mean([row["dice_ours_vs_monai"] for row in result.dice]))
    ratios["trained-model speed-up over MONAI (test cases)"] = (
        sum(r["seconds_monai"] for r in result.dice) / sum(r["seconds_ours"] for r in result.dice))
    ratios["training data wait share"] = result.training.data_share
    ratios["training iterations per second"] = result.training.iterations_per_s
    result.ratios = ratios

    names = list(result.inference)
    first = result.inference[names[0]]
    speedups = [ratios[f"{n} speed-up over MONAI (end to end)"] for n in names]
    overheads = [ratios[f"{n} tiling overhead (grown tiles / whole)"] for n in names]
    trained = ratios["trained-model speed-up over MONAI (test cases)"]
    gap = ratios["Dice difference ours - MONAI"]
    tuned = result.tuned_inference
    tuned_speedups = "" if not tuned else (
        "; with the tuned malloc " + " / ".join(f"{ratios[f'{n} speed-up over MONAI, tuned malloc']:.2f}x" for n in tuned))
    tuned_overheads = "" if not tuned else (
        "; with the tuned malloc " + " / ".join(f"{ratios[f'{n} tiling overhead, tuned malloc']:.2f}" for n in tuned))
    tuned_default = "" if not tuned else f"; with the tuned malloc {tuned[names[0]]['default_ours'].total:.2f} s"
    tuned_ours = "" if not tuned else f"; with the tuned malloc {tuned[names[0]]['ours'].total:.2f} s"
    # The verdicts go by the allocator settings the CLI runs predict and train with (pipeline.allocator), i.e.
    # the child's figures; without them (not glibc, or the child failed) by glibc's defaults and the test cases.
    shipped = tuned or result.inference
    shipped_speedups = ([ratios[f"{n} speed-up over MONAI, tuned malloc"] for n in tuned] if tuned
                        else speedups + [trained])
    dice_note = ("within 0.01" if abs(gap) <= TARGETS["dice_tolerance"]
                 else ("ours higher by more than 0.01" if gap > 0 else "ours lower by more than 0.01"))
    result.targets = [
        (
            f"inference >= {TARGETS['speedup']:.0f}x faster than MONAI's default (same roi_size) at Dice within "
            f"{TARGETS['dice_tolerance']} (no worse); ours: {result.ours_description}",
            f"{' / '.join(f'{v:.2f}x' for v in speedups)} ({' / '.join(names)}, end to end, 5-channel network)"
            f"{tuned_speedups}; {trained:.2f}x over the trained model's test cases; mean Dice ours {mean['ours']:.4f}, "
            f"MONAI {mean['monai']:.4f} ({gap:+.4f}: {dice_note})",
            min(shipped_speedups) >= TARGETS["speedup"] and gap >= -TARGETS["dice_tolerance"],
        ),
        (
            f"tiling overhead of `OverlapTileInferer` (grown tiles / one whole-volume pass) <= {TARGETS['tiling_overhead']}",
            f"{' / '.join(f'{o:.2f}' for o in overheads)} ({' / '.join(names)}){tuned_overheads}",
            max(overheads) <= TARGETS["tiling_overhead"],
        ),
        (
            f"default UNet++ < {TARGETS['case_seconds']:.0f} s end to end for a {names[0]} case: the bundle's "
            "default network",
            f"{first['default_ours'].total:.2f} s{tuned_default} ({result.default_network})",
            shipped[names[0]]["default_ours"].total < TARGETS["case_seconds"],
        ),
        (
            f"default UNet++ < {TARGETS['case_seconds']:.0f} s end to end for a {names[0]} case: the planned "
            "(trained) network",
            f"{first['ours'].total:.2f} s{tuned_ours} ({result.model['architecture']})",
            shipped[names[0]]["ours"].total < TARGETS["case_seconds"],
        ),
        (
            f"data waiting < {100 * TARGETS['data_wait_share']:.0f}% of training step time",
            f"{100 * result.training.data_share:.1f}% ({result.training.iterations_per_s:.2f} iterations/s)",
            result.training.data_share < TARGETS["data_wait_share"],
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------
def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


METHOD_NAMES = {
    "ours": "ours: the bundles' inferer (`segmentation_inferer`)",
    "monai": "MONAI `SlidingWindowInferer(roi_size, overlap=0.5, mode=\"gaussian\")`, float32",
    "monai_patch": "MONAI, `roi_size` = the training patch",
    "grown": "`OverlapTileInferer(roi_size, max_tile_voxels=2**21)`, grown tiles, float32",
    "whole": "one whole-volume network pass, float32",
    "default_ours": "ours, bundle-default UNet++",
}


def _timing_table(timings: Mapping[str, Timing], with_memory: bool, ours: str) -> list[str]:
    monai_timing = timings["monai"]
    rows = []
    for method, t in timings.items():
        name = METHOD_NAMES.get(method, method) + (f": {ours}" if method == "ours" else "")
        row = [name, f"{t.total:.2f}", f"{t.network:.2f}",
               f"{monai_timing.total / t.total:.2f}", f"{monai_timing.network / t.network:.2f}",
               statistics.median(t.calls), f"{statistics.median(t.page_faults) / 1000:.0f}k"]
        rows.append(row + ([_mb(t.rss_bytes)] if with_memory else []))
    header = ["method", "end to end s", "network s", "ratio (end to end)", "ratio (network)", "network calls",
              "page faults"] + (["peak RSS MB"] if with_memory else [])
    return _table(header, rows)


def format_results(result: BenchmarkResult) -> str:
    """The Markdown of ``benchmarks/results.md`` (every title of :data:`SECTIONS`, in order).

    Args:
        result: what :func:`run_benchmark` measured.

    Returns:
        The text.
    """
    env = result.environment
    lines = ["# Benchmark", ""]
    if result.quick:
        lines += ["**Quick smoke run (`--quick`): tiny sizes, one repeat; these figures are not the benchmark.**", ""]
    lines += [f"Written by `{env['command']}` on {env['date']} ({result.elapsed_s / 60:.1f} min).", ""]

    lines += ["## Machine", ""]
    rows = [["machine", env["machine"]], ["CPU", env["cpu"]],
            ["CPU count (usable by this process)", f"{env['cpu_count']} ({env['usable_cpus']})"],
            ["torch threads", env["torch_threads"]], ["load average at start (1, 5, 15 min)", env["load_average"]],
            ["device", env["device"] + (f" ({env['gpu']})" if "gpu" in env else "")],
            ["python / torch / MONAI", f"{env['python']} / {env['torch']} / {env['monai']}"],
            ["command", f"`{env['command']}`"], ["date", env["date"]],
            ["trained model", result.model["source"]], ["its network", result.model["architecture"]]]
    lines += _table(["", ""], rows) + [""]

    lines += ["## Targets", ""]
    if result.quick:
        lines += ["(Quick run: tiny sizes and networks, so these verdicts say nothing about the targets.)", ""]
    lines += ["The first figure of each row is with glibc malloc's defaults (this process); the figures after *tuned "
              f"malloc* come from a child process with `{result.tuned_note}`, the settings that `python -m pipeline` "
              "gives its own processes and the bundle runs it starts (`pipeline/allocator.py`; opt out with "
              "`PIPELINE_MALLOC=default`). Verdicts go by the tuned figures when they were measured.", ""]
    lines += _table(["target", "measured", "met"],
                    [[what, figure, "yes" if met else "**no**"] for what, figure, met in result.targets]) + [""]

    lines += ["## Inference per case", "",
              f"A network of the trained architecture with {IN_CHANNELS_TIMING} input channels (ISLES 2018: CT, CBF, "
              f"CBV, MTT, Tmax) and random weights; input a random preprocessed tensor, output softmax probabilities. "
              f"`roi_size` {result.roi_size} for both inferers (the bundle's inference `roi_size`: the trained patch "
              f"in-plane, the whole slab across); the *roi_size = the training patch* row gives MONAI "
              f"{result.patch_size} literally. Medians over the timed repeats, run side by side after one untimed "
              "pass of every method (warm-up and memory); *network*: the time inside the network's forward calls; "
              "*ratio*: MONAI's time over this row's (above 1: faster than MONAI); *page faults*: minor page faults "
              "per call (the kernel zero-filling memory the allocator has just mapped).", ""]
    for name, timings in result.inference.items():
        lines += [f"**{name}** (timed repeats: {len(next(iter(timings.values())).total_s)})", ""]
        lines += _timing_table(timings, with_memory=True, ours=result.ours_description) + [""]
    if result.tuned_inference:
        lines += ["**The same, with glibc malloc tuned** (a child process with "
                  f"`{result.tuned_note}`: big blocks come from the heap and are kept, instead of a fresh `mmap`, "
                  "zero-filled page by page, for every large tensor of every call; jemalloc or tcmalloc are meant to "
                  "behave alike, not measured here). Ratios within this table only.", ""]
        for name, timings in result.tuned_inference.items():
            lines += [f"*{name}* (timed repeats: {len(next(iter(timings.values())).total_s)})", ""]
            lines += _timing_table(timings, with_memory=False, ours=result.ours_description) + [""]
    else:
        lines += [f"Tuned malloc: {result.tuned_note}.", ""]

    lines += ["## Dice on trained weights", "",
              "The trained model on the synthetic test cases (the bundle's validation preprocessing; Dice of the "
              "argmax mask against the ground truth on that grid). *ours vs MONAI*: Dice between the two masks; "
              "the three methods ran side by side on every case.", ""]
    rows = [[r["case_id"], r["shape"], f"{r['dice_ours']:.4f}", f"{r['dice_monai']:.4f}", f"{r['dice_grown']:.4f}",
             f"{r['dice_ours_vs_monai']:.4f}", f"{r['seconds_ours']:.2f}", f"{r['seconds_monai']:.2f}",
             f"{r['seconds_monai'] / r['seconds_ours']:.2f}"] for r in result.dice]
    mean = {k: float(np.mean([r[k] for r in result.dice]))
            for k in ("dice_ours", "dice_monai", "dice_grown", "dice_ours_vs_monai")}
    total = {k: sum(r[k] for r in result.dice) for k in ("seconds_ours", "seconds_monai")}
    rows.append(["**mean / total**", "", f"{mean['dice_ours']:.4f}", f"{mean['dice_monai']:.4f}",
                 f"{mean['dice_grown']:.4f}", f"{mean['dice_ours_vs_monai']:.4f}", f"{total['seconds_ours']:.1f}",
                 f"{total['seconds_monai']:.1f}", f"{total['seconds_monai'] / total['seconds_ours']:.2f}"])
    lines += _table(["case", "input", "Dice ours", "Dice MONAI", "Dice grown tiles", "ours vs MONAI", "ours s",
                     "MONAI s", "speed-up"], rows)
    lines += ["", f"Mean Dice difference ours - MONAI: {mean['dice_ours'] - mean['dice_monai']:+.4f}; "
              f"grown tiles (float32) - MONAI: {mean['dice_grown'] - mean['dice_monai']:+.4f}.", ""]

    lines += ["## Tiling overhead", "",
              "End-to-end time of tiled inference over one whole-volume network pass (float32) on the same volume "
              "(1.0: no overhead; the target, for `OverlapTileInferer`, is at most 1.3). MONAI's windows of the "
              "training patch cost about 2.25x the voxels of one pass on a 256x256 slab; *ours* is timed under its "
              "autocast, so its column mixes both effects.", ""]
    rows = []
    for name, t in result.inference.items():
        tuned = (result.tuned_inference or {}).get(name)
        rows.append([name, f"{t['grown'].total / t['whole'].total:.2f}", f"{t['monai'].total / t['whole'].total:.2f}",
                     f"{t['ours'].total / t['whole'].total:.2f}",
                     f"{tuned['grown'].total / tuned['whole'].total:.2f}" if tuned else "n/a",
                     f"{tuned['monai'].total / tuned['whole'].total:.2f}" if tuned else "n/a"])
    lines += _table(["case", "grown tiles", "MONAI", "ours (the bundles' inferer)", "grown tiles, tuned malloc",
                     "MONAI, tuned malloc"], rows) + [""]

    lines += ["## UNet++ pruning", "",
              "The trained UNet++ pruned to each level (`prune(level)`, weights shared): parameters, end-to-end time "
              "of our inferer on a random input of the first case shape with the trained channels (median, side by "
              "side), and the mean Dice on the test cases.", ""]
    full = result.pruning[-1]["seconds"]
    rows = [[f"L{r['level']}", f"{r['parameters'] / 1e6:.3f} M", f"{r['seconds']:.2f}", f"{r['seconds'] / full:.2f}",
             f"{r['dice']:.4f}", r["foreground"]] for r in result.pruning]
    lines += _table(["level", "parameters", "seconds", "time / full", "mean Dice", "lesion voxels predicted"], rows)
    silent = [f"L{r['level']}" for r in result.pruning if r["foreground"] == 0]
    if silent:
        lines += ["", f"{', '.join(silent)}: the head predicts no lesion at all on these cases (a property of the "
                  "trained weights: that deep-supervision head did not learn the lesion class)."]
    lines += [""]

    tr = result.training
    data, step = tr.measured()
    lines += ["## Training", "",
              "The bundle's `train.json` run with MONAI's `ConfigWorkflow` (its data pipeline: cached deterministic "
              "transforms, random crops and augmentation in a `ThreadDataLoader`), timed with Ignite events: "
              "waiting for data = `GET_BATCH_STARTED` to `GET_BATCH_COMPLETED`; step = `ITERATION_STARTED` to "
              "`ITERATION_COMPLETED`. The first iteration (warm-up) is left out.", ""]
    rows = [["iterations measured", len(step)], ["epochs", tr.epochs],
            ["batch", f"{tr.batch_size} cases x {tr.samples_per_case} patches of {tr.patch_size}"],
            ["iterations per second", f"{tr.iterations_per_s:.2f}"],
            ["median step s (compute)", f"{statistics.median(step):.3f}" if step else "n/a"],
            ["median data wait s", f"{statistics.median(data):.4f}" if data else "n/a"],
            ["share of step time waiting for data", f"{100 * tr.data_share:.1f}%"],
            ["setup before the first iteration s (parsing, caching)", f"{tr.setup_s:.1f}"]]
    lines += _table(["", ""], rows) + [""]

    lines += ["## Peak memory", "",
              "Peak resident set size of the process beyond what it held before the call, in the untimed pass of "
              "every method (sampled every 5 ms, after `malloc_trim` handed freed memory back)"
              + ("; GPU: the CUDA allocator's peak" if env["device"].startswith("cuda") else "")
              + f". Whole run: peak RSS {_mb(result.peak_rss_bytes)} MB (`getrusage`).", ""]
    rows = []
    for name, timings in result.inference.items():
        for method, t in timings.items():
            rows.append([name, METHOD_NAMES.get(method, method), _mb(t.rss_bytes), _mb(t.gpu_bytes)])
    lines += _table(["case", "method", "peak RSS MB", "peak GPU MB"], rows) + [""]

    lines += ["## How it was measured", "",
              "- Every table ran in one process, side by side: within each repeat every method runs once, in an "
              "order that rotates between repeats; the figures are medians, compared as ratios, because the machine "
              "is shared and absolute times vary with its load.",
              "- All inference runs under `torch.inference_mode()`, on the same network object and weights; "
              "softmax is part of the end-to-end time of every method.",
              "- *ours* is the inferer the bundles build for the network (`pipeline.inferers.segmentation_inferer`, "
              "with `amp` at its default for the device, `pipeline.precision.low_precision_pays_off`): MONAI's "
              "windows of the training patch for a network whose normalisation sees the tile (instance norm), "
              "`OverlapTileInferer` with grown tiles for one that does not (batch norm); under bf16 autocast on "
              "CPUs with native bf16 (AVX512-BF16 or AMX) and on GPUs. MONAI, grown tiles and the whole-volume pass "
              "run in float32.",
              "- MONAI's inferer is compared at the same `roi_size` (in-plane patch, whole slab across); the row with "
              "`roi_size` = the training patch is what MONAI's default gives with the 2-slice patch itself.",
              "- On these shapes grown tiles and the whole-volume pass do the same work (one pass), so their ratio "
              "shows how much the medians still vary in this run.",
              "- The *bundle-default UNet++* is the bundle's `network_def` as shipped (features 16..256, depth 4); "
              "the *planned (trained)* one is the model above (from its plans).",
              f"- Dice is measured on synthetic ISLES-2018-like test cases (`python -m pipeline synth`, seed "
              f"{env['seed']}), never trained on.", ""]
    return "\n".join(lines)


def command_benchmark(args: argparse.Namespace) -> int:
    """``python -m pipeline benchmark``: run :func:`run_benchmark` with the parsed options; returns 0.

    Raises:
        FileNotFoundError, ValueError: see :func:`options_from_args` and :func:`run_benchmark`.
    """
    run_benchmark(options_from_args(args))
    return 0

