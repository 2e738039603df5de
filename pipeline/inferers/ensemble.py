"""Averaging predictions: activation names, the one-tensor output check, :class:`MeanEnsemble` (several networks as
one module) and :class:`EnsembleInferer` (an inferer run once per member, the probabilities averaged)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import reduce
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from torch import nn

from pipeline.inferers.network_traits import is_valid_conv

__all__ = ["ACTIVATIONS", "EnsembleInferer", "MeanEnsemble", "log_of_mean"]

ACTIVATIONS = ("softmax", "sigmoid")


def _resolve_activation(activation: str | Callable | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if activation is None or callable(activation):
        return activation
    name = str(activation).lower()
    if name == "softmax":
        return lambda y: torch.softmax(y, dim=1)
    if name == "sigmoid":
        return torch.sigmoid
    raise ValueError(f"activation must be None, one of {ACTIVATIONS} or a callable, got {activation!r}")


def _single_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    raise TypeError(
        f"the network returned a {type(output).__name__}, but overlap-tile inference needs one tensor "
        "(N, C, *spatial): put the network in eval mode (network.eval()), where the networks of "
        "pipeline.networks return one tensor, or wrap it in a module that selects the output"
    )


# A module, unlike monai.transforms.MeanEnsemble, which averages predictions that were already computed.
class MeanEnsemble(nn.Module):
    """Mean of the probabilities of several networks (an ensemble of checkpoints) as one module.

    Args:
        networks: the member networks; each returns one tensor (N, C, *spatial) of the same shape.
        activation: ``"softmax"`` (over dim 1, the default), ``"sigmoid"``, a callable, or None to average the raw
            outputs (logits) instead of probabilities.
        log_output: return the logarithm of the mean (of softmax probabilities: a drop-in replacement for logits,
            since a softmax after it gives the mean probabilities back, as in the bundles' inference configs).

    Valid-convolution members (see :func:`is_valid_conv`) must share their geometry (``margin``); the ensemble then
    exposes ``margin``, ``output_size`` and ``input_size_for`` of the first member, so
    :class:`OverlapTileInferer` tiles it like a single valid-convolution network. Same-padded members that all
    expose a ``size_divisor`` give the ensemble the least common multiple of theirs, so it gets grown tiles too.
    Members that share their ``strides`` give the ensemble theirs (the axes mirror test-time augmentation flips).

    Raises:
        ValueError: if ``networks`` is empty, mixes valid-convolution and same-padded members, or the
            valid-convolution members have different margins; or on an unknown activation name.
    """

    def __init__(self, networks: Sequence[nn.Module], activation: str | Callable | None = "softmax",
                 log_output: bool = False) -> None:
        super().__init__()
        networks = list(networks)
        if not networks:
            raise ValueError("MeanEnsemble needs at least one network")
        self.networks = nn.ModuleList(networks)
        self.activation = activation
        self._activation = _resolve_activation(activation)
        self.log_output = bool(log_output)
        strides = [getattr(net, "strides", None) for net in networks]
        if strides[0] is not None and all(s == strides[0] for s in strides):
            self.strides = strides[0]  # what test-time augmentation mirrors (default_tta_flips)
        valid = [is_valid_conv(net) for net in networks]
        if any(valid) and not all(valid):
            raise ValueError(
                "MeanEnsemble cannot mix valid-convolution and same-padded networks (their outputs differ in size)"
            )
        if all(valid):
            margins = {tuple(net.margin) if not isinstance(net.margin, int) else (net.margin,) for net in networks}
            if len(margins) > 1:
                raise ValueError(
                    f"the valid-convolution members of a MeanEnsemble must share one margin, got {sorted(margins)}"
                )
            self.margin = networks[0].margin
            self.output_size = networks[0].output_size
            self.input_size_for = networks[0].input_size_for
        elif all(getattr(net, "size_divisor", None) is not None for net in networks):
            divisors = [n.size_divisor for n in networks]
            if all(isinstance(d, int) for d in divisors):
                self.size_divisor = reduce(math.lcm, divisors)
            elif len({len(d) for d in divisors if not isinstance(d, int)}) == 1:  # ints apply to every axis
                dims = next(len(d) for d in divisors if not isinstance(d, int))
                expanded = [[d] * dims if isinstance(d, int) else list(d) for d in divisors]
                self.size_divisor = [reduce(math.lcm, axis) for axis in zip(*expanded)]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return the mean over the members of ``activation(member(x, *args, **kwargs))`` (its log with ``log_output``).

        Raises:
            TypeError: if a member returns something other than one tensor (e.g. a tuple in training mode).
        """
        total: torch.Tensor | None = None
        for network in self.networks:
            y = _single_tensor(network(x, *args, **kwargs))
            if self._activation is not None:
                y = self._activation(y)
            total = y if total is None else total + y
        assert total is not None
        if self.log_output:
            return log_of_mean(total, len(self.networks))
        return total / len(self.networks)


def log_of_mean(total: torch.Tensor, count: int, like: Any = None) -> torch.Tensor:
    """``log(total / count)`` in float32, clamped above 0, with the metadata of ``like`` when it is a MetaTensor:
    the mean of ``count`` probability maps as a drop-in replacement for logits (a softmax after it gives the mean)."""
    mean = total.float() / count
    out = torch.log(mean.clamp_min(torch.finfo(torch.float32).tiny))
    if isinstance(like, MetaTensor):
        out = MetaTensor(out, meta=like.meta, applied_operations=like.applied_operations)
    return out


class EnsembleInferer(Inferer):
    """Run ``inferer`` with each member of an ensemble and average their probabilities (softmax over channels).

    Each member predicts the whole input on its own, windows and blending included, so the result is the mean of
    the members' predictions as each would give it alone. Called with a :class:`MeanEnsemble`, it runs its
    members; with any other network, that network alone. Returns the log of the mean probabilities (see
    :func:`log_of_mean`), so that a config's ``Activationsd(softmax=True)`` after it gives the mean.

    Args:
        inferer: the inferer of one member (e.g. MONAI's ``SlidingWindowInferer``).
    """

    def __init__(self, inferer: Inferer) -> None:
        super().__init__()
        self.inferer = inferer

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Predict ``inputs`` (N, C, *spatial) with every member; returns the log of the mean probabilities."""
        members = list(network.networks) if isinstance(network, MeanEnsemble) else [network]
        total: torch.Tensor | None = None
        first: Any = None
        for member in members:
            output = self.inferer(inputs, member, *args, **kwargs)
            first = output if first is None else first
            probabilities = torch.softmax(torch.as_tensor(output).float(), dim=1)
            total = probabilities if total is None else total + probabilities
        assert total is not None
        return log_of_mean(total, len(members), first)
