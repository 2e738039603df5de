"""A network's placement: its device and memory format, shared by training and inference configs."""

from __future__ import annotations

import torch


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """``torch.channels_last_3d`` for 3D data (5D tensors), ``torch.channels_last`` for 2D (4D tensors).

    Raises:
        ValueError: ``spatial_dims`` is neither 2 nor 3.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"channels-last needs 2 or 3 spatial dimensions, got {spatial_dims}")
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def prepare_network(network: torch.nn.Module, device: str | torch.device, channels_last: bool = False) -> torch.nn.Module:
    """Move a network to ``device``, in channels-last memory format when asked.

    Args:
        network: the network (its convolution weights tell 2D from 3D).
        device: where it runs.
        channels_last: store convolution weights channels-last (``channels_last_3d`` for 3D networks),
            which lets cuDNN pick its NDHWC kernels; the values and the state dict are unchanged.

    Returns:
        The same module, moved.
    """
    network = network.to(device)
    if channels_last:
        convs = [m for m in network.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
        if convs:
            network = network.to(memory_format=channels_last_format(convs[0].weight.dim() - 2))
    return network
