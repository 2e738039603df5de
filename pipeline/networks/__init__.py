"""Networks of the UNet family: UNet++ (nested skips, deep supervision, pruning), U-Net, valid-conv U-Net, FCN.

Every network takes ``spatial_dims``, ``in_channels`` and ``out_channels`` and returns one tensor
(N, out_channels, *spatial) in eval mode. Bundles reference the classes with ``_target_``
(e.g. ``pipeline.networks.UNetPlusPlus``) or go through :func:`build`; :func:`prepare_network` places one on its
device and memory format (:mod:`pipeline.networks.placement`).
"""

from __future__ import annotations

from torch import nn

from pipeline.networks.common import count_parameters
from pipeline.networks.fcn import FCN, FCN8s, FCN16s, FCN32s
from pipeline.networks.placement import channels_last_format, prepare_network
from pipeline.networks.unet import UNet
from pipeline.networks.unetpp import UNetPlusPlus
from pipeline.networks.valid_unet import ValidUNet

__all__ = [
    "channels_last_format",
    "prepare_network",
    "FCN",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "NETWORKS",
    "UNet",
    "UNetPlusPlus",
    "ValidUNet",
    "build",
    "count_parameters",
]

NETWORKS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "unetpp": UNetPlusPlus,
    "valid_unet": ValidUNet,
    "fcn8s": FCN8s,
    "fcn16s": FCN16s,
    "fcn32s": FCN32s,
}


def build(name: str, **kwargs) -> nn.Module:
    """Construct the network registered as ``name`` with ``kwargs``.

    Args:
        name: one of ``unet``, ``unetpp``, ``valid_unet``, ``fcn8s``, ``fcn16s``, ``fcn32s`` (case-insensitive).
        **kwargs: constructor arguments of that network (all take ``spatial_dims``, ``in_channels``, ``out_channels``).

    Returns:
        The constructed ``nn.Module``.

    Raises:
        ValueError: if ``name`` is not a registered network (the message lists the names), or from the constructor.
    """
    key = str(name).lower()
    if key not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of: {', '.join(NETWORKS)}")
    return NETWORKS[key](**kwargs)
