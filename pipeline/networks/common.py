"""Shared helpers of the networks: per-level size arguments, padding to a multiple and cropping back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import pipeline.networks.normalization  # noqa: F401  (registers norm="channel_layer" and "batch_renorm" with MONAI)

PAD_MODES = ("constant", "replicate", "reflect")


def per_level_sizes(
    value: Sequence[Sequence[int] | int] | int | None,
    count: int,
    spatial_dims: int,
    default: int,
    name: str,
) -> list[tuple[int, ...]]:
    """Expand a per-level size argument (strides, kernel sizes) to one tuple per level and axis.

    Args:
        value: None (use ``default`` everywhere), one int for every level and axis, or a sequence
            of ``count`` entries, each an int (same on every axis) or a sequence of ``spatial_dims`` ints.
        count: number of levels the argument must describe.
        spatial_dims: number of spatial axes.
        default: the value used when ``value`` is None.
        name: the argument's name, used in error messages.

    Returns:
        ``count`` tuples of ``spatial_dims`` positive ints.

    Raises:
        ValueError: wrong number of levels, wrong number of axes in an entry, or a value below 1.
    """
    if value is None:
        value = default
    if isinstance(value, int):
        levels: list = [value] * count
    else:
        levels = list(value)
        if len(levels) != count:
            raise ValueError(f"{name} must give {count} levels, got {len(levels)}: {levels}")
    expanded = []
    for index, entry in enumerate(levels):
        sizes = (int(entry),) * spatial_dims if isinstance(entry, int) else tuple(int(v) for v in entry)
        if len(sizes) != spatial_dims:
            raise ValueError(f"{name}[{index}] must have {spatial_dims} values (one per axis), got {entry}")
        if min(sizes) < 1:
            raise ValueError(f"{name}[{index}] must be positive, got {entry}")
        expanded.append(sizes)
    return expanded


def cumulative_stride(strides: Sequence[Sequence[int]], spatial_dims: int) -> tuple[int, ...]:
    """Return the product of the per-level strides on each axis (the total downsampling factor).

    Args:
        strides: one tuple of ``spatial_dims`` ints per level.
        spatial_dims: number of spatial axes.

    Returns:
        A tuple of ``spatial_dims`` ints.
    """
    total = [1] * spatial_dims
    for level in strides:
        for axis, step in enumerate(level):
            total[axis] *= int(step)
    return tuple(total)


def resolve_size_divisor(
    size_divisor: Sequence[int] | int | None, strides: Sequence[Sequence[int]], spatial_dims: int
) -> list[int]:
    """Return the per-axis multiple inputs are padded to: ``size_divisor`` expanded, or the product of ``strides``.

    Raises:
        ValueError: if ``size_divisor`` has the wrong number of axes or a value below 1.
    """
    if size_divisor is None:
        return list(cumulative_stride(strides, spatial_dims))
    return list(per_level_sizes([size_divisor], 1, spatial_dims, 1, "size_divisor")[0])


def resolve_depth_and_features(
    spatial_dims: int,
    depth: int | None,
    strides: Sequence[Sequence[int] | int] | int | None,
    features: Sequence[int] | None,
    base_features: int,
    depth_range: tuple[int, int],
    network_name: str | None = None,
) -> tuple[int, list[int]]:
    """Check the arguments the U-Net and UNet++ share and fill in their defaults.

    Args:
        spatial_dims: 2 or 3.
        depth: number of downsamplings; None takes ``len(strides)`` when ``strides`` is a sequence, else 4.
        strides: the network's ``strides`` argument (only its length is read here).
        features: channels per level, ``depth + 1`` entries; None takes ``base_features * 2**i``.
        base_features: channels of level 0 when ``features`` is None.
        depth_range: the smallest and largest depth the network supports.
        network_name: named in the depth error (``"... for the U-Net"``) when given.

    Returns:
        The depth and the ``depth + 1`` widths, as ints.

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3, a depth outside ``depth_range``, or ``features`` that are not
            ``depth + 1`` positive widths.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if depth is None:
        depth = len(strides) if isinstance(strides, Sequence) else 4
    low, high = depth_range
    if not low <= depth <= high:
        network = f" for the {network_name}" if network_name else ""
        raise ValueError(f"depth must be between {low} and {high}{network}, got {depth}")
    if features is None:
        features = [base_features * 2**i for i in range(depth + 1)]
    features = [int(f) for f in features]
    if len(features) != depth + 1 or min(features) < 1:
        raise ValueError(f"features must give {depth + 1} positive widths (depth + 1), got {features}")
    return depth, features


def check_input_dims(x: torch.Tensor, spatial_dims: int) -> None:
    """Raise ValueError unless ``x`` is a batch (N, C, *spatial) with ``spatial_dims`` spatial axes."""
    if x.dim() != spatial_dims + 2:
        raise ValueError(f"expected a tensor (N, C, *spatial) with {spatial_dims} spatial axes, got {x.dim()} axes")


def check_pad_mode(pad_mode: str) -> str:
    """Return ``pad_mode`` if it is one of :data:`PAD_MODES`; raise ValueError naming them otherwise."""
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    return pad_mode


def pad_to_multiple(x: torch.Tensor, multiple: List[int], mode: str) -> Tuple[torch.Tensor, List[int]]:
    """Pad the spatial axes of ``x`` (N, C, *spatial) up to the next multiple of ``multiple``.

    The padding is split between both sides (the smaller half first), so the image stays centred.

    Args:
        x: a batch of images, channels first.
        multiple: one divisor per spatial axis.
        mode: ``"constant"`` (zeros), ``"replicate"`` or ``"reflect"``.

    Returns:
        The padded tensor (``x`` itself when nothing is padded) and, per spatial axis, the number
        of voxels added before the image, which :func:`crop_spatial` needs to undo the padding.
    """
    spatial_dims = len(multiple)
    before: List[int] = []
    pad: List[int] = []
    padded = False
    for axis in range(spatial_dims):
        size = x.shape[2 + axis]
        total = (multiple[axis] - size % multiple[axis]) % multiple[axis]
        left = total // 2
        before.append(left)
        if total > 0:
            padded = True
        # F.pad lists the last axis first.
        pad = [left, total - left] + pad
    if not padded:
        return x, before
    if mode == "constant":
        return F.pad(x, pad, mode="constant", value=0.0), before
    return F.pad(x, pad, mode=mode), before


def crop_spatial(x: torch.Tensor, start: List[int], size: List[int]) -> torch.Tensor:
    """Crop the last ``len(size)`` axes of ``x`` to ``size``, beginning at ``start`` on each axis.

    Args:
        x: a tensor whose trailing axes are the spatial axes (a stacked deep-supervision output works too).
        start: first kept index per spatial axis.
        size: kept length per spatial axis.

    Returns:
        A view of ``x``; ``x`` itself when nothing is cropped.
    """
    first_axis = x.dim() - len(size)
    for axis in range(len(size)):
        if start[axis] != 0 or x.shape[first_axis + axis] != size[axis]:
            x = x.narrow(first_axis + axis, start[axis], size[axis])
    return x


def center_crop_to(x: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Crop the spatial axes of ``x`` (N, C, *spatial) symmetrically to ``size``.

    Args:
        x: a batch of feature maps, channels first.
        size: the target size per spatial axis, each no larger than ``x``'s.

    Returns:
        The centred crop (the extra voxel of an odd difference is dropped at the end).
    """
    start: List[int] = []
    for axis in range(len(size)):
        start.append((x.shape[2 + axis] - size[axis]) // 2)
    return crop_spatial(x, start, size)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Return the number of (trainable) parameters of ``module``; shared parameters count once."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def init_kaiming(module: nn.Module) -> None:
    """He-normal initialisation of convolution weights and zero biases (``module.apply(init_kaiming)``)."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
