"""3D convolutions whose kernel spans one voxel on an axis, run as 2D convolutions over that axis's slices.

A ``Conv3d`` with a (3, 3, 1) kernel (the in-plane levels of an anisotropic network, or every level of a slice-wise
one) computes each slice on its own, but PyTorch's CPU kernels run it as a full 3D convolution, several times
slower than the same work done by ``conv2d``. :func:`fold_unit_axes` swaps such layers for :class:`UnitAxisConv3d`
and :class:`UnitAxisConvTranspose3d`, which fold that axis into the batch, run the 2D operation and unfold. The
weights keep their 3D shape and names, so checkpoints load either way, and the output is the same: only the
convolutions are folded; normalisation and everything else still see the 3D tensor.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UnitAxisConv3d", "UnitAxisConvTranspose3d", "fold_unit_axes", "unit_axis_of", "voxelwise_axes"]


def unit_axis_of(layer: nn.Module) -> int | None:
    """The spatial axis (0..2) along which a 3D (transposed) convolution acts voxel by voxel, if it has one.

    That is an axis with kernel 1, stride 1, padding 0 (and output padding 0 for a transposed one); the last such
    axis when several qualify.

    Args:
        layer: any module.

    Returns:
        The axis, or ``None`` when ``layer`` is not a plain ``nn.Conv3d`` / ``nn.ConvTranspose3d`` with zero
        padding mode and integer padding, or has no such axis.
    """
    if type(layer) not in (nn.Conv3d, nn.ConvTranspose3d):
        return None
    axes = voxelwise_axes(layer)
    return axes[-1] if axes else None


def voxelwise_axes(layer: nn.Conv3d | nn.ConvTranspose3d) -> list[int]:
    """The spatial axes (0..2) along which a 3D (transposed) convolution, folded or not, computes each slice on
    its own: kernel 1, stride 1, no padding (nor output padding), zero padding mode.

    Args:
        layer: an ``nn.Conv3d`` or ``nn.ConvTranspose3d`` (or a subclass).

    Returns:
        The axes in increasing order; empty when there are none.
    """
    return [a for a in range(3) if _acts_voxelwise(layer, a)]


def _acts_voxelwise(layer: nn.Module, axis: int) -> bool:
    """Whether a 3D (transposed) convolution has kernel 1, stride 1, no padding (nor output padding) on ``axis``
    and pads with zeros, so that it computes each slice along ``axis`` on its own."""
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return False
    output_padding = getattr(layer, "output_padding", (0, 0, 0))
    return (layer.kernel_size[axis] == 1 and layer.stride[axis] == 1 and layer.padding[axis] == 0
            and output_padding[axis] == 0)


def _fold(x: torch.Tensor, into: List[int]) -> Tuple[torch.Tensor, int, int]:
    """(N, C, S0, S1, S2) to (N * slices, C, A, B) along the permutation ``into``; also returns N and slices."""
    if x.shape[into[1]] == 1:
        # one slice: merging the unit axis into the one before keeps the memory order, so nothing is copied (an
        # exported graph gets a Reshape, not a Transpose, and keeps its dynamic batch axis)
        return x.flatten(into[1] - 1, into[1]), x.shape[0], 1
    moved = x.permute(into)
    n, slices = moved.shape[0], moved.shape[1]
    return moved.reshape(n * slices, moved.shape[2], moved.shape[3], moved.shape[4]), n, slices


def _unfold(y: torch.Tensor, n: int, slices: int, back: List[int]) -> torch.Tensor:
    """The inverse of :func:`_fold` for the 2D output ``y`` (N * slices, C', A', B')."""
    if slices == 1:
        return y.unsqueeze(back.index(1))
    return y.reshape(n, slices, y.shape[1], y.shape[2], y.shape[3]).permute(back)


def _permutations(axis: int) -> tuple[List[int], List[int]]:
    """(into, back): ``into`` moves spatial ``axis`` of (N, C, S0, S1, S2) next to the batch, (N, S_axis, C, A, B);
    ``back`` restores (N, C, S0, S1, S2) from that order."""
    others = [a for a in range(3) if a != axis]
    into = [0, 2 + axis, 1] + [2 + a for a in others]
    back = [into.index(d) for d in range(5)]
    return into, back


def _other_axes(values, axis: int) -> List[int]:
    return [int(v) for a, v in enumerate(values) if a != axis]


class UnitAxisConv3d(nn.Conv3d):
    """A ``Conv3d`` whose kernel is 1 along ``unit_axis``, computed as a ``conv2d`` over that axis's slices.

    Same constructor as ``nn.Conv3d`` plus ``unit_axis``; build one from an existing layer with :meth:`from_conv`.

    Raises:
        ValueError: the kernel, stride or padding along ``unit_axis`` is not 1, 1 and 0, or the padding mode is not
            zeros.
    """

    def __init__(self, *args, unit_axis: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not _acts_voxelwise(self, unit_axis):
            raise ValueError(f"a unit-axis convolution needs kernel 1, stride 1 and padding 0 on axis {unit_axis}, "
                             f"got kernel {self.kernel_size}, stride {self.stride}, padding {self.padding}")
        self.unit_axis = int(unit_axis)
        self._into, self._back = _permutations(self.unit_axis)
        self._stride2 = _other_axes(self.stride, self.unit_axis)
        self._padding2 = _other_axes(self.padding, self.unit_axis)
        self._dilation2 = _other_axes(self.dilation, self.unit_axis)

    @classmethod
    def from_conv(cls, conv: nn.Conv3d, unit_axis: int) -> "UnitAxisConv3d":
        """A :class:`UnitAxisConv3d` with ``conv``'s settings, sharing its parameters."""
        folded = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None, unit_axis=unit_axis,
                     device=conv.weight.device, dtype=conv.weight.dtype)
        folded.weight = conv.weight
        folded.bias = conv.bias
        return folded.train(conv.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` (N, C, S0, S1, S2); returns (N, out_channels, ...) as ``nn.Conv3d`` would."""
        folded, n, slices = _fold(x, self._into)
        y = F.conv2d(folded, self.weight.select(2 + self.unit_axis, 0), self.bias, self._stride2, self._padding2,
                     self._dilation2, self.groups)
        return _unfold(y, n, slices, self._back)


class UnitAxisConvTranspose3d(nn.ConvTranspose3d):
    """A ``ConvTranspose3d`` whose kernel is 1 along ``unit_axis``, computed as a ``conv_transpose2d`` per slice.

    Same constructor as ``nn.ConvTranspose3d`` plus ``unit_axis``; build one from a layer with :meth:`from_conv`.

    Raises:
        ValueError: the kernel, stride, padding or output padding along ``unit_axis`` is not 1, 1, 0 and 0.
    """

    def __init__(self, *args, unit_axis: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not _acts_voxelwise(self, unit_axis):
            raise ValueError(f"a unit-axis transposed convolution needs kernel 1, stride 1 and no padding on axis "
                             f"{unit_axis}, got kernel {self.kernel_size}, stride {self.stride}")
        self.unit_axis = int(unit_axis)
        self._into, self._back = _permutations(self.unit_axis)
        self._stride2 = _other_axes(self.stride, self.unit_axis)
        self._padding2 = _other_axes(self.padding, self.unit_axis)
        self._output_padding2 = _other_axes(self.output_padding, self.unit_axis)
        self._dilation2 = _other_axes(self.dilation, self.unit_axis)

    @classmethod
    def from_conv(cls, conv: nn.ConvTranspose3d, unit_axis: int) -> "UnitAxisConvTranspose3d":
        """A :class:`UnitAxisConvTranspose3d` with ``conv``'s settings, sharing its parameters."""
        folded = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     output_padding=conv.output_padding, groups=conv.groups, bias=conv.bias is not None,
                     dilation=conv.dilation, unit_axis=unit_axis, device=conv.weight.device, dtype=conv.weight.dtype)
        folded.weight = conv.weight
        folded.bias = conv.bias
        return folded.train(conv.training)

    def forward(self, x: torch.Tensor, output_size: List[int] | None = None) -> torch.Tensor:
        """Transpose-convolve ``x`` (N, C, S0, S1, S2) as ``nn.ConvTranspose3d`` would (``output_size`` unsupported).

        Raises:
            ValueError: ``output_size`` is given.
        """
        if output_size is not None:
            raise ValueError("UnitAxisConvTranspose3d does not take output_size")
        folded, n, slices = _fold(x, self._into)
        y = F.conv_transpose2d(folded, self.weight.select(2 + self.unit_axis, 0), self.bias, self._stride2,
                               self._padding2, self._output_padding2, self.groups, self._dilation2)
        return _unfold(y, n, slices, self._back)


def fold_unit_axes(module: nn.Module) -> nn.Module:
    """Swap, in place, every plain 3D (transposed) convolution in ``module`` that acts voxel by voxel along an axis
    (:func:`unit_axis_of`) for its unit-axis version, keeping the parameters and their names.

    Args:
        module: a network.

    Returns:
        ``module`` itself.
    """
    for name, child in module.named_children():
        axis = unit_axis_of(child)
        if axis is None:
            fold_unit_axes(child)
        elif type(child) is nn.Conv3d:
            setattr(module, name, UnitAxisConv3d.from_conv(child, axis))
        else:
            setattr(module, name, UnitAxisConvTranspose3d.from_conv(child, axis))
    return module
