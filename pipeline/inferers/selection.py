"""The default path: :func:`segmentation_inferer` chooses the inferer the bundles validate and predict with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import Inferer, SlidingWindowInferer

from pipeline.inferers.ensemble import EnsembleInferer, MeanEnsemble
from pipeline.inferers.foreground_crop import ForegroundCropInferer
from pipeline.inferers.network_traits import size_divisor_of, tile_independent
from pipeline.inferers.overlap_tile import OverlapTileInferer
from pipeline.inferers.roi import checked_roi_size
from pipeline.inferers.tiling import DEFAULT_MAX_TILE_VOXELS
from pipeline.inferers.tta import FlipTTAInferer, default_tta_flips
from pipeline.inferers.window_budget import WindowBudgetInferer
from pipeline.precision import AutocastInferer, amp_dtype
from pipeline.runtimes.choice import resolve_runtime
from pipeline.runtimes.inferer import RuntimeInferer

__all__ = ["inferer_chain", "segmentation_inferer"]


def segmentation_inferer(
    network: Any,
    roi_size: Sequence[int],
    device: str | torch.device = "cpu",
    amp: bool = False,
    overlap: float = 0.5,
    sw_batch_size: int | None = None,
    max_tile_voxels: int | None = DEFAULT_MAX_TILE_VOXELS,
    tta: bool = False,
    tta_flips: Sequence[Sequence[int]] | None = None,
    runtime: str | None = "torch",
    runtime_cache_dir: str | None = None,
    crop_foreground: bool = True,
) -> Inferer:
    """The inferer the bundles validate and predict with, chosen by what the network's output depends on.

    - A tile-independent network (:func:`tile_independent`, e.g. ``norm="batch"``) with a ``size_divisor`` gets
      :class:`OverlapTileInferer` with tiles grown from ``roi_size`` (a 256x256xN slab in one pass: the result of
      MONAI's windows at a fraction of the cost, since only the tile borders differ).
    - Any other network (instance norm, as in nnU-Net) gets MONAI's ``SlidingWindowInferer`` (as
      :class:`WindowBudgetInferer`, which batches thin windows) over ``roi_size`` windows (the bundles give the
      training patch, :func:`sliding_window_roi`), ``overlap`` 0.5 and Gaussian blending: its normalisation sees
      the window, and windows like the training patches keep its output as trained.
    - ``tta`` averages the probabilities over mirrored inputs (:class:`pipeline.inferers.tta.FlipTTAInferer`
      around the chosen inferer): ``tta_flips``, or every combination of the axes the network pools
      (:func:`pipeline.inferers.tta.default_tta_flips` of its ``strides``).
    - A :class:`pipeline.inferers.MeanEnsemble` (several checkpoints) gets :class:`EnsembleInferer` around the
      chosen inferer: each member predicts the whole input, and their probabilities are averaged.
    - ``amp`` runs either under autocast (:class:`pipeline.precision.AutocastInferer`: bf16 on CPUs and recent GPUs,
      fp16 on older GPUs), outputs in float32.
    - ``runtime`` other than ``torch`` runs the network exported to ONNX in that runtime
      (:class:`pipeline.runtimes.RuntimeInferer` in place of autocast; ``amp`` then lets OpenVINO compute in
      bfloat16), behind the same windows and blending.
    - ``crop_foreground`` (the default) runs all of the above on the bounding box of the input's non-zero voxels
      only (:class:`pipeline.inferers.ForegroundCropInferer`, nnU-Net's crop to the non-zero region), and gives
      the rest of the volume to the background class.

    Args:
        network: the network that will run (it is inspected, not called).
        roi_size: the window (the smallest tile when tiles grow); ``-1`` takes an axis whole.
        device: where the network runs (decides the autocast device type and dtype).
        amp: run under autocast.
        overlap: MONAI's window overlap.
        sw_batch_size: windows or tiles per network call; None: as many windows as fit
            :data:`DEFAULT_MAX_BATCH_VOXELS` (:class:`WindowBudgetInferer`), one grown tile.
        max_tile_voxels: the bound on one grown tile's network input (see :class:`OverlapTileInferer`).
        tta: mirror test-time augmentation.
        tta_flips: the flip sets of ``tta`` (default: from the network's strides).
        runtime: ``"torch"`` (default), ``"onnxruntime"``, ``"openvino"``, or ``"auto"``/None for the measured
            default of the device (:func:`pipeline.runtimes.resolve_runtime`; a runtime that is not installed falls
            back to torch with a warning).
        runtime_cache_dir: where exported networks are kept (:func:`pipeline.runtimes.runtime_cache_dir`).
        crop_foreground: infer on the foreground's bounding box only.

    Returns:
        An :class:`pipeline.precision.AutocastInferer` around the chosen inferer (autocast off unless ``amp``), or a
        :class:`pipeline.runtimes.RuntimeInferer` for another runtime;
        for an ensemble, an :class:`EnsembleInferer` around that; with ``tta``, a
        :class:`~pipeline.inferers.tta.FlipTTAInferer` around that. The output of both is the log of the mean
        probabilities (a config's softmax after it gives the mean probabilities); with ``crop_foreground``, a
        :class:`~pipeline.inferers.ForegroundCropInferer` around all of that.

    Raises:
        ValueError: on a ``roi_size`` entry of 0 or below -1, or an unknown runtime.
    """
    roi = list(checked_roi_size(roi_size))
    if tile_independent(network) and size_divisor_of(network, len(roi)) is not None:
        inner: Inferer = OverlapTileInferer(
            roi_size=roi, sw_batch_size=sw_batch_size or 1, max_tile_voxels=max_tile_voxels
        )
    elif sw_batch_size is None:
        inner = WindowBudgetInferer(roi_size=roi, overlap=overlap, mode="gaussian")
    else:
        inner = SlidingWindowInferer(roi_size=roi, sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian")
    device = torch.device(device)
    runtime = resolve_runtime(runtime, device)
    chosen: Inferer
    if runtime == "torch":
        chosen = AutocastInferer(inner, device.type, amp_dtype(device), enabled=bool(amp))
    else:
        chosen = RuntimeInferer(inner, runtime, runtime_cache_dir, reduced_precision=bool(amp))
    if isinstance(network, MeanEnsemble):
        chosen = EnsembleInferer(chosen)
    if tta:
        flips = tta_flips if tta_flips is not None else default_tta_flips(getattr(network, "strides", None), len(roi))
        chosen = FlipTTAInferer(chosen, flips)
    if crop_foreground:
        chosen = ForegroundCropInferer(chosen)
    return chosen


def inferer_chain(inferer: Any) -> list[Any]:
    """``inferer`` and the inferers it wraps (each one's ``inferer`` attribute), outermost first: the layers
    :func:`segmentation_inferer` stacks (foreground crop, TTA, ensemble, autocast or runtime, windows or tiles)."""
    chain = [inferer]
    while isinstance(getattr(chain[-1], "inferer", None), Inferer) and len(chain) < 32:
        chain.append(chain[-1].inferer)
    return chain
