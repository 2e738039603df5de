"""Inference over whole volumes: the inferer the bundles use, chosen per network, and the inferers it chooses from.

The default path is :func:`segmentation_inferer` (the bundles' ``_target_: pipeline.inferers.segmentation_inferer``,
given ``roi_size`` from :func:`sliding_window_roi` of the training patch). It inspects the network, without calling
it, and picks by what the network's output depends on:

- a tile-independent network (:func:`tile_independent`: no normalisation takes statistics over its input, e.g.
  batch norm in eval mode) that has a ``size_divisor`` (:func:`size_divisor_of`) gets :class:`OverlapTileInferer`
  with tiles grown from ``roi_size`` up to :data:`DEFAULT_MAX_TILE_VOXELS` per tile (a 256x256xN slab in one pass);
- any other network (instance norm, as in nnU-Net) gets MONAI's sliding windows of ``roi_size`` with overlap 0.5
  and Gaussian blending, as :class:`WindowBudgetInferer` (as many windows per call as fit
  :data:`DEFAULT_MAX_BATCH_VOXELS`), or as MONAI's ``SlidingWindowInferer`` when ``sw_batch_size`` is given;
- either runs inside :class:`pipeline.precision.AutocastInferer` (autocast only with ``amp``);
- with ``tta``, :class:`FlipTTAInferer` averages the probabilities over mirrored inputs around that;
- all of it runs on the bounding box of the input's non-zero voxels (:class:`ForegroundCropInferer`, nnU-Net's crop
  to the non-zero region), the rest of the volume given to the background class.

Modules:

- :mod:`~pipeline.inferers.selection`: :func:`segmentation_inferer`, the choice above, and :func:`inferer_chain`;
- :mod:`~pipeline.inferers.network_traits`: what the choice and the tiling read off a network
  (:func:`is_valid_conv`, :func:`size_divisor_of`, :func:`tile_independent`, the valid-convolution margin);
- :mod:`~pipeline.inferers.roi`: :func:`checked_roi_size` and :func:`sliding_window_roi`;
- :mod:`~pipeline.inferers.window_budget`: :class:`WindowBudgetInferer`, MONAI's windows batched by a voxel budget;
- :mod:`~pipeline.inferers.overlap_tile`: :class:`OverlapTileInferer` (mirrored borders, valid-centre cropping,
  grown tiles, flip TTA, ensembles) and its output contract;
- :mod:`~pipeline.inferers.tiling`: its tile plans (:class:`AxisPlan`, :class:`TilePlan`, :func:`auto_margin`) and
  the valid output sizes of valid-convolution networks;
- :mod:`~pipeline.inferers.padding`: :func:`mirror_pad`, the padding the overlap-tile inferer applies tile by tile;
- :mod:`~pipeline.inferers.foreground_crop`: :class:`ForegroundCropInferer` and :func:`foreground_box`;
- :mod:`~pipeline.inferers.tta`: :class:`FlipTTAInferer` and :func:`default_tta_flips`, mirror test-time
  augmentation around any inferer;
- :mod:`~pipeline.inferers.ensemble`: :class:`MeanEnsemble` (checkpoints as one module), :class:`EnsembleInferer`
  (an inferer run per member, the probabilities averaged) and the activations predictions are averaged after.

Every name is importable from ``pipeline.inferers`` itself.
"""

from __future__ import annotations

from pipeline.inferers.ensemble import ACTIVATIONS, EnsembleInferer, MeanEnsemble, log_of_mean
from pipeline.inferers.foreground_crop import ForegroundCropInferer, foreground_box
from pipeline.inferers.network_traits import is_valid_conv, size_divisor_of, tile_independent
from pipeline.inferers.overlap_tile import BLEND_MODES, OverlapTileInferer
from pipeline.inferers.padding import PADDING_MODES, mirror_pad
from pipeline.inferers.roi import checked_roi_size, sliding_window_roi
from pipeline.inferers.selection import inferer_chain, segmentation_inferer
from pipeline.inferers.tta import FlipTTAInferer, default_tta_flips
from pipeline.inferers.tiling import AUTO_MARGIN_FRACTION, DEFAULT_MAX_TILE_VOXELS, AxisPlan, TilePlan, auto_margin
from pipeline.inferers.window_budget import DEFAULT_MAX_BATCH_VOXELS, WindowBudgetInferer

__all__ = [
    "ACTIVATIONS",
    "AUTO_MARGIN_FRACTION",
    "AxisPlan",
    "BLEND_MODES",
    "DEFAULT_MAX_BATCH_VOXELS",
    "DEFAULT_MAX_TILE_VOXELS",
    "FlipTTAInferer",
    "ForegroundCropInferer",
    "MeanEnsemble",
    "EnsembleInferer",
    "log_of_mean",
    "OverlapTileInferer",
    "WindowBudgetInferer",
    "PADDING_MODES",
    "TilePlan",
    "auto_margin",
    "checked_roi_size",
    "default_tta_flips",
    "foreground_box",
    "inferer_chain",
    "is_valid_conv",
    "mirror_pad",
    "segmentation_inferer",
    "size_divisor_of",
    "sliding_window_roi",
    "tile_independent",
]
