"""MONAI's sliding windows batched by a voxel budget: :class:`WindowBudgetInferer`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer
from monai.utils import fall_back_tuple

__all__ = ["DEFAULT_MAX_BATCH_VOXELS", "WindowBudgetInferer"]

# Windows per network call of WindowBudgetInferer: as many as keep one batch within this many voxels (2**18: eight
# 128x128x2 windows of a thin slab, four of 128x128x4, two of 128x128x8, thicker ones alone): thin windows share
# a network call, thick ones keep a batch's memory bounded (the timings are in benchmarks/results*.md).
DEFAULT_MAX_BATCH_VOXELS = 2**18


# MONAI's SlidingWindowInferer batches a fixed number of windows, whatever their size.
class WindowBudgetInferer(SlidingWindowInferer):
    """MONAI's ``SlidingWindowInferer`` that picks ``sw_batch_size`` for each input: as many windows per network
    call as keep the batch within ``max_batch_voxels`` (at least one). The windows, their weights and the
    result are MONAI's; only the batching changes: thin windows (the 128x128x2 windows of 2-slice slabs) go
    through the network several at a time, in fewer calls.

    Args:
        roi_size: the window, as for ``SlidingWindowInferer`` (``-1``: the whole axis).
        max_batch_voxels: the most voxels of input windows in one network call.
        kwargs: any other ``SlidingWindowInferer`` argument except ``sw_batch_size`` (``overlap``, ``mode``, ...).

    Raises:
        ValueError: a non-positive ``max_batch_voxels``.
    """

    def __init__(self, roi_size: Sequence[int] | int, max_batch_voxels: int = DEFAULT_MAX_BATCH_VOXELS,
                 **kwargs: Any) -> None:
        if int(max_batch_voxels) < 1:
            raise ValueError(f"max_batch_voxels must be positive, got {max_batch_voxels}")
        super().__init__(roi_size=roi_size, sw_batch_size=1, **kwargs)
        self.max_batch_voxels = int(max_batch_voxels)

    def windows_per_call(self, spatial_shape: Sequence[int]) -> int:
        """Windows per network call for an input of ``spatial_shape`` (MONAI clips the window to the input)."""
        window = [min(r, int(size)) for r, size in zip(fall_back_tuple(self.roi_size, spatial_shape), spatial_shape)]
        return max(1, self.max_batch_voxels // math.prod(window))

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any):
        """MONAI's sliding-window inference of ``network`` on ``inputs`` (N, C, *spatial), windows batched."""
        self.sw_batch_size = self.windows_per_call(inputs.shape[2:])
        return super().__call__(inputs, network, *args, **kwargs)
