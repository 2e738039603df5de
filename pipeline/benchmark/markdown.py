"""The Markdown of ``benchmarks/results.md``: :func:`format_results`, its section titles (:data:`SECTIONS`)
and the table helpers."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.benchmark.measurement import Timing
from pipeline.benchmark.scenarios import IN_CHANNELS_TIMING
from pipeline.benchmark.targets import paired_difference

if TYPE_CHECKING:
    from pipeline.benchmark.run import BenchmarkResult

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
    "runtime_torch": "the bundles' inferer, network in torch (autocast as `amp`)",
    "runtime_onnxruntime": "the bundles' inferer, network in ONNX Runtime (float32)",
    "runtime_openvino": "the bundles' inferer, network in OpenVINO (float32 unless `amp`)",
    "nnunet": "nnU-Net's predictor settings: MONAI windows (step 0.5, gaussian), one at a time, mirroring TTA, float32",
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
              f"CBV, MTT, Tmax) and random weights; input Gaussian noise inside a head-sized ellipse and 0 outside it "
              f"(`head_like_input`: a third of each slice, as the brain in a CTP slab), output softmax probabilities. "
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
              "the three methods ran side by side on every case, each timed after one untimed pass (in which a runtime "
              "exports a window shape it has not seen; `predict` keeps those exports between runs).", ""]
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
    gap, gap_error = paired_difference(result.dice, "dice_ours", "dice_monai")
    grown_gap, grown_error = paired_difference(result.dice, "dice_grown", "dice_monai")
    lines += ["", f"Mean Dice difference ours - MONAI: {gap:+.4f} (standard error {gap_error:.4f}); grown tiles "
              f"(float32) - MONAI: {grown_gap:+.4f} ({grown_error:.4f}). The standard error is that of the mean of "
              f"the {len(result.dice)} paired differences: a difference within about two of it is what another "
              "draw of as many cases could reverse.", ""]

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
              "of our inferer on the head-sized input of the first case shape with the trained channels (median, "
              "side by side), and the mean Dice on the test cases.", ""]
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
