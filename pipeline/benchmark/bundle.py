"""The bundle as the benchmark reads it: a parsed config with overrides, a fresh network from its
``network_def``, the weights of a checkpoint, and a one-line description of a network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


def _bundle_parser(bundle: Path, config: str, profile: Path, overrides: Sequence[tuple[str, Any]]):
    """A ``ConfigParser`` of ``bundle/configs/<config>`` stacked with the dataset profile, then ``overrides`` set."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / config), str(profile)])
    for key, value in overrides:
        parser[key] = value
    return parser


def _network(parser, in_channels: int | None = None, device: torch.device | None = None) -> nn.Module:
    """A fresh network from a parsed config's ``network_def`` (optionally with other input channels), in eval mode."""
    config = parser.get("network_def")
    config = dict(config)
    if in_channels is not None:
        config["in_channels"] = in_channels
    parser["benchmark_network"] = config
    network = parser.get_parsed_content("benchmark_network", lazy=False)
    return network.to(device or "cpu").eval()


def _state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The network weights of a bundle checkpoint (its ``model`` entry) or of a bare state dict."""
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        return dict(loaded["model"])
    if isinstance(loaded, Mapping) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return dict(loaded)
    raise ValueError(f"{checkpoint}: neither a bundle checkpoint with a 'model' entry nor a state dict")


def _architecture(network: nn.Module) -> str:
    """One line for the tables: the network's class, depth, features, strides and parameter count."""
    features = getattr(network, "features", None)
    depth = getattr(network, "depth", None)
    strides = getattr(network, "strides", None)
    parameters = sum(p.numel() for p in network.parameters())
    return (f"{type(network).__name__} depth {depth}, features {features}, strides {[list(s) for s in strides or []]}, "
            f"{parameters / 1e6:.2f} M parameters")
