"""What the inferers read off a network: valid-convolution geometry, margin, size divisor, tile independence."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

__all__ = ["is_valid_conv", "size_divisor_of", "tile_independent"]


def is_valid_conv(network: Any) -> bool:
    """Return True if ``network`` has the valid-convolution geometry: ``margin``, ``output_size``, ``input_size_for``.

    Args:
        network: a module or any callable.

    Returns:
        Whether the overlap-tile inferer treats ``network`` as a network whose output is smaller than its input.
    """
    return (
        hasattr(network, "margin")
        and callable(getattr(network, "output_size", None))
        and callable(getattr(network, "input_size_for", None))
    )


def _network_margin(network: Any, spatial_dims: int) -> tuple[int, ...]:
    margin = network.margin
    margin = (int(margin),) * spatial_dims if isinstance(margin, int) else tuple(int(m) for m in margin)
    if len(margin) != spatial_dims:
        raise ValueError(f"the network's margin {margin} does not have one entry per spatial axis ({spatial_dims})")
    return margin


def size_divisor_of(network: Any, spatial_dims: int) -> tuple[int, ...] | None:
    """The per-axis input multiple a same-padded network computes without padding, or None if it does not say.

    Args:
        network: a module or callable, or a sequence of them (an ensemble: the least common multiple of theirs).
        spatial_dims: the number of spatial axes.

    Returns:
        The network's ``size_divisor`` (an int or one per axis, as the networks of :mod:`pipeline.networks`
        expose it) expanded to ``spatial_dims`` ints, or None when the network (or any member) has none, or it
        does not have one entry per axis. Only networks with a divisor get grown tiles.
    """
    members = list(network) if isinstance(network, (list, tuple, nn.ModuleList)) else [network]
    result: tuple[int, ...] | None = None
    for member in members:
        divisor = getattr(member, "size_divisor", None)
        if divisor is None:
            return None
        divisor = (int(divisor),) * spatial_dims if isinstance(divisor, int) else tuple(int(d) for d in divisor)
        if len(divisor) != spatial_dims or min(divisor) < 1:
            return None
        result = divisor if result is None else tuple(math.lcm(a, b) for a, b in zip(result, divisor))
    return result


# Normalisations whose statistics are taken over the input at hand: with them, a network's output depends on the tile.
_TILE_STATISTICS = (nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def tile_independent(network: Any) -> bool:
    """Whether a network computes the same value at a voxel whatever tile the voxel is inferred in (in eval mode,
    up to its receptive field): no normalisation takes statistics over its input. Batch norm (running statistics)
    and networks without normalisation are; instance norm without running statistics, group and layer norm are not.

    Args:
        network: a module (or an ensemble of modules); anything else counts as tile-dependent.

    Returns:
        True when every normalisation of ``network`` uses fixed statistics in eval mode.
    """
    members = list(network) if isinstance(network, (list, tuple)) else [network]
    if not members or not all(isinstance(member, nn.Module) for member in members):
        return False
    for member in members:
        for module in member.modules():
            if isinstance(module, nn.modules.instancenorm._InstanceNorm) and not module.track_running_stats:
                return False
            if isinstance(module, _TILE_STATISTICS):
                return False
    return True
