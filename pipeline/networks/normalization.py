"""Normalisations whose output at a voxel does not depend on the tile it is inferred in, registered with MONAI's
``Norm`` factory so that any network of :mod:`pipeline.networks` takes them by name (``norm="channel_layer"``,
``norm="batch_renorm"``, ``network_def#norm=...`` in a bundle).

Instance norm, nnU-Net's and the bundles' default, normalises each channel over the whole input: the output of a
window depends on the window, so inference keeps the training patch's windows. These two do not:

- :class:`ChannelLayerNorm`: each voxel over its channels (ConvNeXt's channels-first LayerNorm), no batch or
  spatial statistics at all, the same in training and at inference;
- :class:`BatchRenorm`: batch norm with Ioffe's (2017) renormalisation, which corrects the batch statistics
  towards the running ones during training, so that the fixed statistics used at inference match what the
  network was trained with even with small batches.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Norm
from torch import nn

__all__ = ["BatchRenorm", "ChannelLayerNorm"]


# torch's nn.LayerNorm normalises the trailing axes; channels-first needs the channel axis (timm's LayerNorm2d, 2-D only)
class ChannelLayerNorm(nn.Module):
    """Normalise every voxel over its channels, with a learnt per-channel scale and shift.

    Args:
        num_features: the number of channels (dim 1).
        eps: added to the variance.
    """

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, *spatial) normalised over C at every voxel."""
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


# neither torch nor MONAI has batch renormalisation
class BatchRenorm(nn.Module):
    """Batch renormalisation (Ioffe 2017): in training, the batch-normalised value is corrected by
    ``r = clip(sigma_batch / sigma_running, 1/r_max, r_max)`` and ``d = clip((mu_batch - mu_running) /
    sigma_running, -d_max, d_max)`` (no gradient through r and d); at inference the running statistics are used,
    as in batch norm.

    Args:
        num_features: the number of channels (dim 1).
        eps: added to the variance.
        momentum: of the running statistics (as batch norm's).
        r_max, d_max: the clipping bounds of the correction (the paper's relaxed values by default).
        warmup_steps: training steps of plain batch norm (r = 1, d = 0) before the correction starts, while the
            running statistics settle.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, r_max: float = 3.0,
                 d_max: float = 5.0, warmup_steps: int = 50) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.eps, self.momentum = float(eps), float(momentum)
        self.r_max, self.d_max, self.warmup_steps = float(r_max), float(d_max), int(warmup_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, *spatial) normalised per channel (batch statistics, corrected, in training; running ones
        in eval mode)."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, unbiased=False)
            std = torch.sqrt(var + self.eps)
            running_std = torch.sqrt(self.running_var + self.eps)
            if int(self.num_batches_tracked) >= self.warmup_steps:
                r = (std.detach() / running_std).clamp(1.0 / self.r_max, self.r_max)
                d = ((mean.detach() - self.running_mean) / running_std).clamp(-self.d_max, self.d_max)
            else:
                r, d = torch.ones_like(std), torch.zeros_like(mean)
            with torch.no_grad():
                count = x.numel() / x.shape[1]
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * count / max(count - 1, 1), self.momentum)
                self.num_batches_tracked += 1
            normalised = (x - mean.view(shape)) / std.view(shape) * r.view(shape) + d.view(shape)
        else:
            normalised = (x - self.running_mean.view(shape)) * torch.rsqrt(self.running_var.view(shape) + self.eps)
        return normalised * self.weight.view(shape) + self.bias.view(shape)


def _register() -> None:
    for name, cls in (("channel_layer", ChannelLayerNorm), ("batch_renorm", BatchRenorm)):
        if name.upper() not in Norm.names:
            Norm.add_factory_callable(name, lambda dim, cls=cls: cls)


_register()
