"""Flip test-time augmentation around any inferer: the mean of the probabilities over mirrored inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import Inferer

from pipeline.inferers.ensemble import log_of_mean


__all__ = ["FlipTTAInferer", "default_tta_flips"]


def default_tta_flips(strides: Sequence[Sequence[int] | int] | None, spatial_dims: int = 3) -> list[list[int]]:
    """The mirrorings that test-time augmentation averages over, as nnU-Net chooses them.

    Every non-empty set of the axes the network pools (a stride above 1 at some level): for the bundles'
    in-plane-only strides ``[[0], [1], [0, 1]]``; the slice axis joins only where the network pools it, since a
    network that never sees context across thick slices gains nothing from mirroring them.

    Args:
        strides: the network's strides per level (an int for all axes, or one entry per axis); ``None``: all axes.
        spatial_dims: the number of spatial axes.

    Returns:
        The flip sets, each a sorted list of 0-based spatial axes.
    """
    if strides is None:
        axes = list(range(spatial_dims))
    else:
        per_level = [[s] * spatial_dims if isinstance(s, int) else list(s) for s in strides]
        axes = [a for a in range(spatial_dims) if any(level[a] > 1 for level in per_level)]
    flips = []
    for mask in range(1, 2 ** len(axes)):
        flips.append([axes[i] for i in range(len(axes)) if mask >> i & 1])
    return sorted(flips, key=lambda f: (len(f), f))


class FlipTTAInferer(Inferer):
    """Run ``inferer`` on the input and on each mirrored copy, and average the probabilities.

    Each prediction is turned into probabilities by the softmax over channels, mirrored back, and averaged with
    the unmirrored one. The result is returned as the *logarithm* of the mean probabilities, so that a config's
    own ``Activationsd(softmax=True)`` after the inferer gives the mean probabilities back unchanged (the softmax of
    ``log p`` is ``p`` when ``p`` sums to one) and the argmax is that of the mean; the output is a drop-in
    replacement for the logits of the wrapped inferer.

    Args:
        inferer: the inferer that predicts one input (a window or tile inferer, e.g. from
            :func:`pipeline.inferers.segmentation_inferer`).
        flips: sets of 0-based spatial axes to mirror, e.g. ``[[0], [1], [0, 1]]`` (:func:`default_tta_flips`).

    Raises:
        ValueError: an empty flip set, or an axis repeated or below 0.
    """

    def __init__(self, inferer: Inferer, flips: Sequence[Sequence[int]]) -> None:
        super().__init__()
        checked = []
        for axes in flips:
            axes = [int(a) for a in axes]
            if not axes or len(set(axes)) != len(axes) or min(axes) < 0:
                raise ValueError(f"a flip set is a non-empty list of distinct spatial axes >= 0, got {list(axes)}")
            checked.append(sorted(axes))
        self.inferer = inferer
        self.flips = checked

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Predict ``inputs`` (N, C, *spatial) with every flip; returns the log of the mean probabilities.

        Raises:
            ValueError: a flip axis beyond the input's spatial axes.
        """
        spatial = inputs.dim() - 2
        if any(a >= spatial for axes in self.flips for a in axes):
            raise ValueError(f"flip axes {self.flips} do not fit an input of {spatial} spatial axes")
        first = self.inferer(inputs, network, *args, **kwargs)
        total = torch.softmax(torch.as_tensor(first).float(), dim=1)
        plain = torch.as_tensor(inputs)
        for axes in self.flips:
            dims = [2 + a for a in axes]
            mirrored = self.inferer(torch.flip(plain, dims), network, *args, **kwargs)
            total = total + torch.flip(torch.softmax(torch.as_tensor(mirrored).float(), dim=1), dims)
        return log_of_mean(total, len(self.flips) + 1, first)
