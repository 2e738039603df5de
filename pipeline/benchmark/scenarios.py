"""What the benchmark compares: the inferers per case shape (:func:`inference_timings`, the bundles' inferer
against MONAI's, grown tiles and one whole-volume pass), Dice of those inferers on the test cases, and the
pruned levels of a UNet++."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.benchmark.bundle import _bundle_parser, _network
from pipeline.benchmark.measurement import Timing, time_side_by_side
from pipeline.planning.cpu_budget import QUICK_FEATURES

IN_CHANNELS_TIMING = 5  # ISLES 2018: CT + CBF, CBV, MTT, Tmax
CASE_SHAPES = ((256, 256, 8), (256, 256, 22))
QUICK_CASE_SHAPES = ((64, 64, 8), (64, 64, 22))
QUICK_ROI = [32, 32, -1]


# The synthetic timing input is noise inside a head-sized ellipse and zero outside (as the normalised test slabs
# are), with semi-axes these fractions of the in-plane sides: a third of the slice, as the brain is in a CTP slab.
HEAD_SEMI_AXES = (0.30, 0.36)


def head_like_input(channels: int, shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, channels, *shape) Gaussian noise inside an in-plane ellipse (:data:`HEAD_SEMI_AXES`) on every slice and
    zero outside it, seeded: a case whose foreground is as large as a brain in a CTP slab.

    Raises:
        ValueError: ``shape`` has fewer than two axes.
    """
    if len(shape) < 2:
        raise ValueError(f"a case shape needs at least two in-plane axes, got {list(shape)}")
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, channels, *shape, generator=generator)
    rows = (torch.arange(shape[0]) + 0.5) / shape[0] - 0.5
    cols = (torch.arange(shape[1]) + 0.5) / shape[1] - 0.5
    inside = (rows[:, None] / HEAD_SEMI_AXES[0]) ** 2 + (cols[None, :] / HEAD_SEMI_AXES[1]) ** 2 <= 1.0
    x *= inside.reshape(*inside.shape, *([1] * (len(shape) - 2)))
    return x.to(device)


def _softmax(y: torch.Tensor) -> torch.Tensor:
    return torch.softmax(y, dim=1)


def bundle_inferer(network: nn.Module, roi: Sequence[int], device: torch.device, runtime: str = "auto",
                   cache_dir: str | None = None):
    """The inferer the bundles' ``inference.json`` builds for ``network`` on ``device`` (``amp`` and ``runtime``
    at their defaults), or with another ``runtime``; exported networks go to ``cache_dir`` (None: a temporary one)."""
    from pipeline.inferers import segmentation_inferer
    from pipeline.precision import low_precision_pays_off

    return segmentation_inferer(network, list(roi), device, amp=low_precision_pays_off(device), runtime=runtime,
                                runtime_cache_dir=cache_dir)


def describe_inferer(inferer: Any) -> str:
    """A short description of what :func:`bundle_inferer` chose, for the tables."""
    from monai.inferers import SlidingWindowInferer

    from pipeline.inferers import ForegroundCropInferer, inferer_chain
    from pipeline.precision import AutocastInferer
    from pipeline.runtimes import RuntimeInferer

    chain = inferer_chain(inferer)
    kind = ("MONAI windows of roi_size (overlap 0.5, gaussian)" if isinstance(chain[-1], SlidingWindowInferer)
            else "`OverlapTileInferer`, grown tiles")
    if any(isinstance(layer, ForegroundCropInferer) for layer in chain):
        kind += " on the foreground's bounding box"
    for layer in chain:
        if isinstance(layer, RuntimeInferer):
            precision = "bfloat16 allowed" if layer.reduced_precision else "float32"
            return f"{kind}, the network in {layer.runtime} ({precision})"
        if isinstance(layer, AutocastInferer) and layer.enabled:
            return f"{kind}, {str(layer.dtype).replace('torch.', '')} autocast"
    return f"{kind}, float32"


def timed_network(inferer: Any, network: nn.Module) -> nn.Module:
    """The module whose forward calls are the network's time under ``inferer``: the network itself, or the
    :class:`pipeline.runtimes.CompiledNetwork` that a runtime's inferer runs in its place."""
    from pipeline.inferers import inferer_chain
    from pipeline.runtimes import RuntimeInferer

    runtimes = [layer for layer in inferer_chain(inferer) if isinstance(layer, RuntimeInferer)]
    return runtimes[0].compiled(network) if runtimes else network


def _inference_methods(
    network: nn.Module, x: torch.Tensor, roi: Sequence[int], patch: Sequence[int] | None = None,
    runtimes: bool = False, cache_dir: str | None = None, ours: Any = None,
) -> dict[str, tuple[nn.Module, Callable]]:
    """The methods compared per case: name -> (network, a call from tensor in to probabilities out); with
    ``runtimes``, also the bundles' inferer in each installed runtime and nnU-Net's predictor settings. ``ours``:
    the bundles' inferer, built once by the caller for several inputs (None: built here)."""
    from monai.inferers import SlidingWindowInferer

    from pipeline.inferers import DEFAULT_MAX_TILE_VOXELS, FlipTTAInferer, OverlapTileInferer, default_tta_flips
    from pipeline.runtimes import RUNTIMES, runtime_available

    ours = ours if ours is not None else bundle_inferer(network, roi, x.device, cache_dir=cache_dir)
    grown = OverlapTileInferer(roi_size=list(roi), max_tile_voxels=DEFAULT_MAX_TILE_VOXELS)
    monai_default = SlidingWindowInferer(roi_size=list(roi), overlap=0.5, mode="gaussian")
    methods = {
        "ours": (timed_network(ours, network), lambda: _softmax(ours(x, network))),
        "monai": (network, lambda: _softmax(monai_default(x, network))),
    }
    if runtimes:
        for runtime in RUNTIMES:
            if runtime_available(runtime) and x.device.type == "cpu":
                other = bundle_inferer(network, roi, x.device, runtime=runtime, cache_dir=cache_dir)
                methods[f"runtime_{runtime}"] = (timed_network(other, network),
                                                 lambda other=other: _softmax(other(x, network)))
        # nnU-Net's predictor: step 0.5, Gaussian weights, windows one at a time, mirroring on the axes it pools
        flips = default_tta_flips(getattr(network, "strides", None), len(roi))
        nnunet = FlipTTAInferer(SlidingWindowInferer(roi_size=list(roi), overlap=0.5, mode="gaussian"), flips)
        methods["nnunet"] = (network, lambda: nnunet(x, network).exp())
    if patch is not None:
        monai_patch = SlidingWindowInferer(roi_size=list(patch), overlap=0.5, mode="gaussian")
        methods["monai_patch"] = (network, lambda: _softmax(monai_patch(x, network)))
    methods["grown"] = (network, lambda: _softmax(grown(x, network)))
    methods["whole"] = (network, lambda: _softmax(network(x)))
    return methods


def inference_timings(spec: Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, dict[str, Timing]]:
    """The side-by-side inference rows: per case shape, every method on the same network and input
    (:func:`head_like_input`).

    Args:
        spec: ``bundle``, ``profile``, ``architecture`` (config overrides of the trained network), ``roi`` (both
            inferers' ``roi_size``), ``patch`` (the training patch, for MONAI with ``roi_size=patch``; None
            leaves that row out), ``shapes`` (spatial shapes), ``repeats``, ``device``, ``quick`` (tiny default
            network), ``methods`` (names to keep; None keeps all), ``memory_pass`` (see :func:`time_side_by_side`),
            ``runtimes`` (default True: also the rows of each installed runtime and nnU-Net's settings).
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
    cache = tempfile.TemporaryDirectory(prefix="benchmark-compiled-")  # the runtimes' exports, one per window shape
    with cache, torch.inference_mode():
        for shape in shapes:
            x = head_like_input(IN_CHANNELS_TIMING, shape, device)
            methods = _inference_methods(timing_net, x, spec["roi"], spec.get("patch"),
                                         runtimes=bool(spec.get("runtimes", True)), cache_dir=cache.name)
            if shape == shapes[0]:
                methods["default_ours"] = _inference_methods(default_net, x, spec["roi"], cache_dir=cache.name)["ours"]
            if keep is not None:
                methods = {name: method for name, method in methods.items() if name in keep}
            name = "x".join(str(s) for s in (IN_CHANNELS_TIMING, *shape))
            results[name] = time_side_by_side(methods, int(spec["repeats"]), device, spec.get("memory_pass", True))
            log(f"benchmark: {name}: " + ", ".join(f"{m} {t.total:.2f} s" for m, t in results[name].items()))
    return results


def _mask(probabilities: torch.Tensor) -> np.ndarray:
    return probabilities.argmax(1)[0].cpu().numpy().astype(bool)


def _dice_rows(network: nn.Module, cases: list[dict], roi: list[int], device: torch.device) -> list[dict[str, Any]]:
    """Dice of our inferer, MONAI's and grown tiles on every test case (run side by side per case, timed after one
    untimed pass of each)."""
    from pipeline.metrics import dice_score

    rows = []
    ours = bundle_inferer(network, roi, device)  # once, as predict builds it once for all its cases
    for case in cases:
        x = case["image"].to(device)
        outputs: dict[str, np.ndarray] = {}
        methods = _inference_methods(network, x, roi, ours=ours)
        chosen = {name: methods[name] for name in ("ours", "monai", "grown")}

        def keep(name: str, run: Callable) -> Callable:
            return lambda: outputs.__setitem__(name, _mask(run()))

        # after one untimed pass, as in the synthetic rows: a runtime exports each new window shape once, and
        # predict keeps the exports between runs
        timings = time_side_by_side({n: (net, keep(n, run)) for n, (net, run) in chosen.items()}, 1, device)
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
    x = head_like_input(int(network.in_channels), shape, device)
    methods = {f"L{level}": (timed_network(inferers[level], net), (lambda n=net, i=inferers[level]: _softmax(i(x, n))))
               for level, net in pruned.items()}
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
