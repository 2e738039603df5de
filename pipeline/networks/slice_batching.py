"""A slice-wise network run with its slices as the batch: one reshape in, one out, 2D work in between.

In a network whose every convolution, transposed convolution and pooling acts voxel by voxel along one axis (the
2d configuration: (3, 3, 1) kernels and (2, 2, 1) strides throughout), a slice only ever meets other slices in
the instance norms, which take their statistics over the whole input. :class:`UnitAxisConv3d` already runs such
layers as 2D operations, but it moves the slices next to the batch and back around every layer, and on a CPU
those copies take a large share of the time. :class:`SliceBatchedNetwork` moves them once: it feeds
the network (N * slices, C, A, B, 1) single-slice inputs, for which the unit-axis layers fold without a copy, and
swaps each ``InstanceNorm3d`` for a :class:`SliceGroupInstanceNorm` that pools its statistics over the slices of
each input, as the instance norm did. Same weights, same output (up to float rounding).

It is built for inference (the exported network of :mod:`pipeline.runtimes`): it works on a copy of the network's
modules, so later changes to the network's weights do not reach it.
"""

from __future__ import annotations

import copy
from typing import List

import torch
from monai.utils import ensure_tuple_rep
from torch import nn

from pipeline.networks.normalization import BatchRenorm, ChannelLayerNorm
from pipeline.networks.unit_axis import voxelwise_axes

__all__ = ["SliceBatchedNetwork", "SliceGroupInstanceNorm", "slice_axis_of", "slice_batched"]

# layers that compute each voxel from its own values (or fixed statistics in eval mode): any batch layout serves
_VOXELWISE = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softmax,
              nn.Identity, nn.Dropout, nn.Dropout3d, nn.AlphaDropout, ChannelLayerNorm)
_FIXED_STATISTICS = (nn.BatchNorm3d, BatchRenorm)
_POOLS = (nn.MaxPool3d, nn.AvgPool3d)


def _layer_axes(layer: nn.Module) -> set[int] | None:
    """The spatial axes along which the leaf ``layer`` acts voxel by voxel (every axis for a voxel-wise layer), an
    empty set for a layer that mixes every axis or the batch, or None for a layer it does not know."""
    if isinstance(layer, (nn.Conv3d, nn.ConvTranspose3d)):
        return set(voxelwise_axes(layer))
    if isinstance(layer, _POOLS):
        kernel, padding = ensure_tuple_rep(layer.kernel_size, 3), ensure_tuple_rep(layer.padding, 3)
        stride = ensure_tuple_rep(layer.stride or layer.kernel_size, 3)
        return {a for a in range(3) if kernel[a] == 1 and stride[a] == 1 and padding[a] == 0}
    if isinstance(layer, nn.Upsample):
        scale = layer.scale_factor
        if layer.size is not None or scale is None:
            return set()
        return {a for a in range(3) if float(ensure_tuple_rep(scale, 3)[a]) == 1.0}
    if isinstance(layer, nn.InstanceNorm3d):
        return set() if layer.track_running_stats else {0, 1, 2}  # pooled over the slices again by the swap
    if isinstance(layer, _VOXELWISE):
        return {0, 1, 2}
    if isinstance(layer, _FIXED_STATISTICS):
        return set() if layer.training else {0, 1, 2}  # batch statistics would pool the moved slices
    if isinstance(layer, (nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.BatchNorm2d,
                          nn.Conv2d, nn.Conv1d)):
        return set()
    return None


def slice_axis_of(network: nn.Module) -> int | None:
    """The spatial axis (0..2) along which every layer of ``network`` with weights or spatial reach acts voxel by
    voxel, so that its slices along it meet only in instance norms; None if there is none.

    A network is judged by its leaves: convolutions and pools must have kernel 1, stride 1 and no padding on the
    axis, upsampling a scale of 1, normalisations must be instance norms without running statistics or
    voxel-wise (channel layer norm, batch norm in eval mode); other layers with parameters (of unknown reach) and
    group or layer norms rule the network out. Its own ``size_divisor`` must be 1 on the axis (no padding there).

    Args:
        network: a 3D network.

    Returns:
        The axis, or None.
    """
    axes = {0, 1, 2}
    convolutions = 0
    for module in network.modules():
        if any(True for _ in module.children()):
            continue
        reach = _layer_axes(module)
        if reach is None:
            if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
                return None
            continue
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            convolutions += 1
        axes &= reach
    divisor = getattr(network, "size_divisor", None)
    if divisor is not None:
        axes = {a for a in axes if int(ensure_tuple_rep(divisor, 3)[a]) == 1}
    if not convolutions or not axes:
        return None
    return max(axes)


class SliceGroupInstanceNorm(nn.Module):
    """Instance norm of inputs whose slices were moved into the batch: statistics per channel over the slices of
    each original input, as ``InstanceNorm3d`` took them before the move.

    Args:
        norm: the ``InstanceNorm3d`` it replaces (its ``eps`` and affine parameters, shared).
        slices: the number of slices each original input had; set per call by :class:`SliceBatchedNetwork`.
    """

    def __init__(self, norm: nn.InstanceNorm3d, slices: int = 1) -> None:
        super().__init__()
        self.eps = float(norm.eps)
        self.weight = norm.weight
        self.bias = norm.bias
        self.slices = slices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (N * slices, C, *spatial) per original input and channel."""
        channels = x.shape[1]
        grouped = x.reshape(-1, self.slices, channels, x.shape[2] * x.shape[3] * x.shape[4])
        # per slice, then over the slices: one pass over contiguous memory each, where a single reduction over
        # both axes strides through the tensor (several times slower in ONNX Runtime); the slices are equal in size
        mean = grouped.mean(dim=3, keepdim=True).mean(dim=1, keepdim=True)
        centred = grouped - mean
        variance = (centred * centred).mean(dim=3, keepdim=True).mean(dim=1, keepdim=True)
        out = (centred / torch.sqrt(variance + self.eps)).reshape(x.shape)
        if self.weight is not None:
            shape = [1, -1] + [1] * (x.dim() - 2)
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


def _swap_instance_norms(module: nn.Module, swapped: List[SliceGroupInstanceNorm]) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.InstanceNorm3d):
            replacement = SliceGroupInstanceNorm(child)
            swapped.append(replacement)
            setattr(module, name, replacement)
        else:
            _swap_instance_norms(child, swapped)


class SliceBatchedNetwork(nn.Module):
    """``network`` run on each input's slices along ``axis`` as a batch of single-slice inputs.

    Takes (N, C, S0, S1, S2) and returns what ``network`` returns for it, (N, C', S0, S1, S2). Build one with
    :func:`slice_batched`, which checks that the network qualifies.

    Args:
        network: a network whose layers act voxel by voxel along ``axis`` (:func:`slice_axis_of`); copied.
        axis: the slice axis (0..2).
    """

    def __init__(self, network: nn.Module, axis: int) -> None:
        super().__init__()
        self.network = copy.deepcopy(network)
        self.axis = int(axis)
        self._norms: List[SliceGroupInstanceNorm] = []
        _swap_instance_norms(self.network, self._norms)
        others = [a for a in range(3) if a != self.axis]
        self._into = [0, 2 + self.axis, 1] + [2 + a for a in others]
        self._back = [self._into.index(d) for d in range(5)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for ``x`` (N, C, S0, S1, S2)."""
        slices = x.shape[2 + self.axis]  # not int(): a tracer keeps the size as a graph value, so exports take any depth
        for norm in self._norms:
            norm.slices = slices
        moved = x.permute(self._into)
        single = moved.reshape(-1, moved.shape[2], moved.shape[3], moved.shape[4]).unsqueeze(2 + self.axis)
        out = self.network(single).flatten(1 + self.axis, 2 + self.axis)  # squeeze exports as a slow If
        return out.reshape(-1, slices, out.shape[1], out.shape[2], out.shape[3]).permute(self._back)


def slice_batched(network: nn.Module) -> SliceBatchedNetwork | None:
    """``network`` as a :class:`SliceBatchedNetwork` if its layers allow it (:func:`slice_axis_of`), else None.

    Args:
        network: a 3D network in eval mode.

    Returns:
        The slice-batched copy, or None.
    """
    axis = slice_axis_of(network)
    return None if axis is None else SliceBatchedNetwork(network, axis).eval()
