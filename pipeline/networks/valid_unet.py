"""The original U-Net (Ronneberger et al. 2015) with unpadded ("valid") convolutions, 2D and 3D.

Each level has two unpadded 3x3 convolutions with ReLU (optional normalisation); the contracting path
max-pools by 2, the expanding path up-convolves by 2 (a transposed convolution halving the channels),
concatenates the centre crop of the contracting path's feature map and convolves twice more; a 1x1
convolution gives the class scores. The output is smaller than the input: with the paper's widths a
572x572 tile gives a 388x388 map. The missing border (:attr:`ValidUNet.margin` per side) is the context an
overlap-tile inferer supplies by mirroring the image.

MONAI has no valid-convolution U-Net; this one is assembled from MONAI ``Convolution`` blocks.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import List

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

from pipeline.networks.common import center_crop_to, check_input_dims, init_kaiming, per_level_sizes

__all__ = ["ValidUNet"]

class _ValidEncoderLevel(nn.Module):
    """Pooling (identity at level 0) followed by two valid convolutions."""

    def __init__(self, pool: nn.Module, block: nn.Module) -> None:
        super().__init__()
        self.pool = pool
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.pool(x))


class _ValidDecoderLevel(nn.Module):
    """Up-convolution, concatenation with the centre-cropped skip, two valid convolutions."""

    def __init__(self, upconv: nn.Module, block: nn.Module) -> None:
        super().__init__()
        self.upconv = upconv
        self.block = block

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.upconv(x)
        size: List[int] = [int(s) for s in up.shape[2:]]
        return self.block(torch.cat([center_crop_to(skip, size), up], dim=1))


class ValidUNet(nn.Module):
    """Paper-faithful U-Net with valid convolutions; the output is smaller than the input by ``2 * margin``.

    Only some input sizes work: every size before a pooling must be divisible by the pooling factor and
    no feature map may vanish. :meth:`output_size` and :meth:`input_size_for` compute the sizes and raise a
    ValueError giving the nearest valid sizes otherwise; ``forward`` checks its input the same way
    (except in a TorchScript module).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes (the paper's 2).
        features: channels per level, from the top; the paper's ``(64, 128, 256, 512, 1024)``. The
            number of poolings (depth) is ``len(features) - 1``.
        strides: max-pooling (and up-convolution) factor per level transition, ``depth`` entries (int or one
            per axis); default 2. Use e.g. ``[2, 2, 1]`` to keep a thin 3D slab's slice axis.
        kernel_sizes: convolution kernel per level, ``depth + 1`` entries, odd; default 3. Use e.g.
            ``[3, 3, 1]`` for axes that must not shrink.
        norm: optional MONAI norm after each convolution (the paper has none).
        act: MONAI activation (the paper's ReLU).
        dropout: dropout probability after each convolution (0 for none).
        bias: whether the convolutions have biases.

    Attributes:
        margin: per axis, the context (in voxels) the input has on each side beyond the output: for every valid
            size, ``input = output + 2 * margin`` (92 per side for the paper's network). An overlap-tile
            inferer extends (mirrors) the image by this much.

    Raises:
        ValueError: on fewer than two levels, per-level arguments of the wrong length, or even kernel sizes.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        strides: Sequence[Sequence[int] | int] | int | None = None,
        kernel_sizes: Sequence[Sequence[int] | int] | int | None = None,
        norm: tuple | str | None = None,
        act: tuple | str | None = "relu",
        dropout: float | None = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        features = [int(f) for f in features]
        if len(features) < 2 or min(features) < 1:
            raise ValueError(f"features must give at least two positive widths, got {features}")
        depth = len(features) - 1
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = features
        self.depth = depth
        self.strides = per_level_sizes(strides, depth, spatial_dims, 2, "strides")
        self.kernel_sizes = per_level_sizes(kernel_sizes, depth + 1, spatial_dims, 3, "kernel_sizes")
        for level, kernel in enumerate(self.kernel_sizes):
            if any(k % 2 == 0 for k in kernel):
                raise ValueError(f"kernel_sizes[{level}] must be odd so the skip crops stay centred, got {kernel}")
        dropout = dropout or None

        def block(cin: int, cout: int, level: int) -> nn.Sequential:
            kernel = self.kernel_sizes[level]
            return nn.Sequential(
                Convolution(spatial_dims, cin, cout, kernel_size=kernel, padding=0, act=act, norm=norm,
                            dropout=dropout, bias=bias),
                Convolution(spatial_dims, cout, cout, kernel_size=kernel, padding=0, act=act, norm=norm,
                            dropout=dropout, bias=bias),
            )

        encoders = [_ValidEncoderLevel(nn.Identity(), block(in_channels, features[0], 0))]
        for level in range(1, depth + 1):
            pool = Pool[Pool.MAX, spatial_dims](kernel_size=self.strides[level - 1], stride=self.strides[level - 1])
            encoders.append(_ValidEncoderLevel(pool, block(features[level - 1], features[level], level)))
        decoders = []
        for level in range(depth - 1, -1, -1):
            upconv = Convolution(spatial_dims, features[level + 1], features[level], strides=self.strides[level],
                                 kernel_size=self.strides[level], padding=0, output_padding=0,
                                 is_transposed=True, conv_only=True, bias=bias)
            decoders.append(_ValidDecoderLevel(upconv, block(2 * features[level], features[level], level)))
        self.encoders = nn.ModuleList(encoders)
        self.decoders = nn.ModuleList(decoders)
        self.classifier = Convolution(spatial_dims, features[0], out_channels, kernel_size=1, conv_only=True, bias=True)
        self.apply(init_kaiming)
        self.margin: tuple[int, ...] = tuple(
            (self._input_for_axis(o, axis) - o) // 2 for axis, o in enumerate(self._smallest_output())
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x`` (N, in_channels, *spatial); returns (N, out_channels, *output_size(spatial)).

        Raises:
            ValueError: if the spatial size is not one the network can take (see :meth:`output_size`).
        """
        if not torch.jit.is_scripting():
            self._check_input(x)
        skips: List[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        x = skips.pop()
        for decoder in self.decoders:
            x = decoder(x, skips.pop())
        return self.classifier(x)

    def output_size(self, input_size: Sequence[int] | int) -> tuple[int, ...]:
        """Return the output size for ``input_size`` (an int applies to every axis).

        Raises:
            ValueError: if an axis size is not positive, is not divisible by the pooling factor where it is
                pooled, or makes a feature map vanish; the message names the nearest valid input sizes.
        """
        sizes = self._expand(input_size, "input_size")
        result = []
        for axis, size in enumerate(sizes):
            output, reason = self._trace_axis(size, axis)
            if output is None:
                below, above = self._nearest(size, lambda s, a=axis: self._trace_axis(s, a)[0] is not None)
                raise ValueError(f"input size {size} on axis {axis} does not fit the network: {reason}; "
                                 f"nearest valid input sizes: {self._describe(below, above)}")
            result.append(output)
        return tuple(result)

    def input_size_for(self, output_size: Sequence[int] | int) -> tuple[int, ...]:
        """Return the input size that gives ``output_size`` (an int applies to every axis).

        Raises:
            ValueError: if no input gives that output size on some axis; the message names the nearest
                valid output sizes.
        """
        sizes = self._expand(output_size, "output_size")
        result = []
        for axis, size in enumerate(sizes):
            if not self._is_valid_output(size, axis):
                below, above = self._nearest(size, lambda s, a=axis: self._is_valid_output(s, a))
                raise ValueError(f"output size {size} on axis {axis} cannot be produced by the network; "
                                 f"nearest valid output sizes: {self._describe(below, above)}")
            result.append(self._input_for_axis(size, axis))
        return tuple(result)

    def _trace_axis(self, size: int, axis: int) -> tuple[int | None, str]:
        """Follow one axis through the network; returns (output size, "") or (None, why it fails)."""
        if size < 1:
            return None, "sizes must be positive"
        for level in range(self.depth + 1):
            size -= 2 * (self.kernel_sizes[level][axis] - 1)
            if size < 1:
                return None, f"the feature map vanishes at level {level} of the contracting path"
            if level < self.depth:
                pool = self.strides[level][axis]
                if size % pool:
                    return None, f"size {size} before pooling at level {level} is not divisible by {pool}"
                size //= pool
        for level in range(self.depth - 1, -1, -1):
            size = size * self.strides[level][axis] - 2 * (self.kernel_sizes[level][axis] - 1)
            if size < 1:
                return None, f"the feature map vanishes at level {level} of the expanding path"
        return size, ""

    def _input_for_axis(self, size: int, axis: int) -> int:
        """Invert :meth:`_trace_axis` for a valid output size."""
        for level in range(self.depth):
            size = (size + 2 * (self.kernel_sizes[level][axis] - 1)) // self.strides[level][axis]
        size += 2 * (self.kernel_sizes[self.depth][axis] - 1)
        for level in range(self.depth - 1, -1, -1):
            size = size * self.strides[level][axis] + 2 * (self.kernel_sizes[level][axis] - 1)
        return size

    def _is_valid_output(self, size: int, axis: int) -> bool:
        return size >= 1 and self._trace_axis(self._input_for_axis(size, axis), axis)[0] == size

    def _smallest_output(self) -> list[int]:
        smallest = []
        for axis in range(self.spatial_dims):
            size = 1
            while not self._is_valid_output(size, axis):
                size += 1
            smallest.append(size)
        return smallest

    @staticmethod
    def _nearest(size: int, is_valid) -> tuple[int | None, int]:
        """Closest valid sizes below (None if there is none) and above ``size``; valid sizes recur periodically."""
        below = next((s for s in range(size - 1, 0, -1) if is_valid(s)), None)
        above = next(s for s in itertools.count(max(size + 1, 1)) if is_valid(s))
        return below, above

    @staticmethod
    def _describe(below: int | None, above: int | None) -> str:
        return " and ".join(str(s) for s in (below, above) if s is not None)

    def _expand(self, size: Sequence[int] | int, name: str) -> list[int]:
        sizes = [int(size)] * self.spatial_dims if isinstance(size, int) else [int(s) for s in size]
        if len(sizes) != self.spatial_dims:
            raise ValueError(f"{name} must have {self.spatial_dims} values, got {size}")
        return sizes

    @torch.jit.unused
    def _check_input(self, x: torch.Tensor) -> None:
        check_input_dims(x, self.spatial_dims)
        self.output_size(tuple(x.shape[2:]))
