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
that the benchmark writes itself (with the functions behind ``synth`` and ``prepare``).

The modules: :mod:`~pipeline.benchmark.options` (what to measure), :mod:`~pipeline.benchmark.measurement`
(clocks, peak memory, side-by-side timing), :mod:`~pipeline.benchmark.bundle` (configs, networks, weights),
:mod:`~pipeline.benchmark.fixtures` (synthetic data, plans, test cases), :mod:`~pipeline.benchmark.timed_training`
(the timed training run), :mod:`~pipeline.benchmark.scenarios` (inference, Dice and pruning rows),
:mod:`~pipeline.benchmark.child` (the tuned-malloc child process), :mod:`~pipeline.benchmark.targets` (the
verdicts), :mod:`~pipeline.benchmark.run` (one run), :mod:`~pipeline.benchmark.markdown` (the results file),
:mod:`~pipeline.benchmark.command` (the CLI command).
"""

from __future__ import annotations

from pipeline.allocator import MALLOC_ENV
from pipeline.benchmark.child import CHILD_METHODS
from pipeline.benchmark.command import command_benchmark
from pipeline.benchmark.markdown import METHOD_NAMES, SECTIONS, format_results
from pipeline.benchmark.measurement import NetworkClock, PeakMemory, Timing, peak_rss_bytes, time_side_by_side
from pipeline.benchmark.options import (
    DEFAULT_BUNDLE,
    DEFAULT_OUT,
    PROJECT_ROOT,
    BenchmarkOptions,
    command_line,
    options_from_args,
)
from pipeline.benchmark.run import BenchmarkResult, run_benchmark
from pipeline.benchmark.scenarios import (
    CASE_SHAPES,
    IN_CHANNELS_TIMING,
    QUICK_CASE_SHAPES,
    QUICK_ROI,
    bundle_inferer,
    describe_inferer,
    inference_timings,
)
from pipeline.benchmark.targets import TARGETS
from pipeline.benchmark.timed_training import TrainingStats
from pipeline.planning.cpu_budget import QUICK_FEATURES

__all__ = [
    "BenchmarkOptions",
    "BenchmarkResult",
    "CASE_SHAPES",
    "CHILD_METHODS",
    "DEFAULT_BUNDLE",
    "DEFAULT_OUT",
    "IN_CHANNELS_TIMING",
    "MALLOC_ENV",
    "METHOD_NAMES",
    "NetworkClock",
    "PROJECT_ROOT",
    "PeakMemory",
    "QUICK_CASE_SHAPES",
    "QUICK_FEATURES",
    "QUICK_ROI",
    "SECTIONS",
    "TARGETS",
    "Timing",
    "TrainingStats",
    "bundle_inferer",
    "command_benchmark",
    "command_line",
    "describe_inferer",
    "format_results",
    "inference_timings",
    "options_from_args",
    "peak_rss_bytes",
    "run_benchmark",
    "time_side_by_side",
]
