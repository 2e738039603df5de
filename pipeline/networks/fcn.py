"""Fully convolutional networks FCN-32s, FCN-16s and FCN-8s (Long et al. 2015), 2D and 3D, as a baseline.

A VGG-style encoder (five blocks of 3x3 convolutions, each closed by max-pooling) and two convolutional
"fully connected" layers (fc6, fc7) give coarse class scores at 1/32 of the input (score_fr).

- FCN-32s upsamples score_fr straight to the input size.
- FCN-16s upsamples score_fr 2x, adds the 1x1 scores of pool4 (score_pool4) and upsamples that 16x.
- FCN-8s additionally upsamples the fused scores 2x, adds the scores of pool3 (score_pool3) and upsamples 8x.

The upsampling layers are transposed convolutions initialised to bilinear interpolation and the score layers
start at zero, as in the paper; the encoder is trained from scratch (no pretrained VGG weights here).
The widths default to a small network usable on a CPU; ``features=(64, 128, 256, 512, 512)``,
``fc_features=4096`` and ``fc_kernel_size=7`` give the paper's VGG-16 sizes.

MONAI has FCN-style heads only on ResNet encoders (``monai.networks.nets.FullyConvNet`` / AHNet), not the
VGG FCN with score fusion, so this module assembles it from MONAI ``Convolution`` blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

from pipeline.networks.common import (
    check_input_dims,
    check_pad_mode,
    crop_spatial,
    cumulative_stride,
    init_kaiming,
    pad_to_multiple,
    per_level_sizes,
)
from pipeline.networks.unit_axis import fold_unit_axes

__all__ = ["FCN", "FCN8s", "FCN16s", "FCN32s", "FCN_VARIANTS", "bilinear_kernel"]

FCN_VARIANTS = ("32s", "16s", "8s")


def bilinear_kernel(factors: Sequence[int], kernel_size: Sequence[int]) -> torch.Tensor:
    """Return the separable bilinear (linear per axis) upsampling kernel used to initialise a transposed convolution.

    MONAI has no bilinear initialiser for transposed convolutions, hence this helper.

    Args:
        factors: upsampling factor per axis.
        kernel_size: kernel size per axis (``2 * factor - factor % 2``, or 1 where the factor is 1).

    Returns:
        A tensor of shape ``kernel_size`` whose transposed convolution with stride ``factors`` interpolates linearly.
    """
    kernel = torch.ones(())
    for factor, size in zip(factors, kernel_size):
        center = factor - 1 if size % 2 == 1 else factor - 0.5
        taps = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
        kernel = kernel.unsqueeze(-1) * taps.clamp(min=0)
    return kernel


class _ScoreUpsample(nn.Module):
    """Transposed convolution upsampling class scores by an integer factor per axis, bilinear at start."""

    def __init__(self, spatial_dims: int, channels: int, factors: Sequence[int]) -> None:
        super().__init__()
        kernel = [2 * f - f % 2 if f > 1 else 1 for f in factors]
        padding = [f // 2 for f in factors]
        self.deconv = Convolution(spatial_dims, channels, channels, strides=list(factors), kernel_size=kernel,
                                  padding=padding, output_padding=0, is_transposed=True, conv_only=True, bias=False)
        weight = torch.zeros_like(self.deconv.conv.weight)
        taps = bilinear_kernel(factors, kernel)
        for channel in range(channels):
            weight[channel, channel] = taps
        with torch.no_grad():
            self.deconv.conv.weight.copy_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(x)


class FCN(nn.Module):
    """FCN-32s / 16s / 8s with a VGG-style encoder trained from scratch.

    Input sizes: any size is accepted; the input is padded (``pad_mode``, split evenly) to a multiple of the
    total pooling factor and the output is cropped back to the input's size. Output: one tensor
    (N, out_channels, *spatial) in every mode.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes.
        variant: ``"32s"``, ``"16s"`` or ``"8s"``.
        features: channels of the five encoder blocks.
        convs_per_block: convolutions in each block (VGG-16: ``(2, 2, 3, 3, 3)``).
        kernel_sizes: kernel of the convolutions of each block, five entries (int or one per axis); default 3 (VGG's).
            ``[3, 3, 1]`` convolves thin 3D slabs in-plane only, like the U-Nets' anisotropic levels.
        fc_features: channels of fc6 and fc7.
        fc_kernel_size: kernel of fc6 (VGG's 7; default 3 to keep it small), an int or one per axis; fc7 is 1x1.
        strides: max-pooling factor after each block, five entries (int or one per axis); default 2.
            Use ``[2, 2, 1]`` for axes that must not be pooled (thin 3D slabs).
        norm: optional MONAI norm after each encoder convolution (VGG has none).
        act: MONAI activation (ReLU).
        dropout: dropout after fc6 and fc7 (the paper's 0.5).
        pad_mode: ``"constant"`` (zeros), ``"replicate"`` or ``"reflect"``.

    Raises:
        ValueError: on an unknown variant, or per-block arguments that do not give five entries.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        variant: str = "8s",
        features: Sequence[int] = (16, 32, 64, 128, 128),
        convs_per_block: Sequence[int] = (2, 2, 3, 3, 3),
        kernel_sizes: Sequence[Sequence[int] | int] | int | None = None,
        fc_features: int = 256,
        fc_kernel_size: Sequence[int] | int = 3,
        strides: Sequence[Sequence[int] | int] | int | None = None,
        norm: tuple | str | None = None,
        act: tuple | str | None = "relu",
        dropout: float | None = 0.5,
        pad_mode: str = "constant",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if variant not in FCN_VARIANTS:
            raise ValueError(f"variant must be one of {FCN_VARIANTS}, got {variant!r}")
        features = [int(f) for f in features]
        convs_per_block = [int(c) for c in convs_per_block]
        if len(features) != 5 or len(convs_per_block) != 5 or min(features + convs_per_block) < 1:
            raise ValueError(
                f"features and convs_per_block must give five positive values, got {features}, {convs_per_block}"
            )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.variant = variant
        self.strides = per_level_sizes(strides, 5, spatial_dims, 2, "strides")
        self.kernel_sizes = per_level_sizes(kernel_sizes, 5, spatial_dims, 3, "kernel_sizes")
        fc_kernel = per_level_sizes([fc_kernel_size], 1, spatial_dims, 3, "fc_kernel_size")[0]
        self.pad_mode = check_pad_mode(pad_mode)
        self.size_divisor: List[int] = list(cumulative_stride(self.strides, spatial_dims))

        blocks = []
        channels = in_channels
        for width, count, kernel, stride in zip(features, convs_per_block, self.kernel_sizes, self.strides):
            layers: list[nn.Module] = []
            for _ in range(count):
                layers.append(Convolution(spatial_dims, channels, width, kernel_size=kernel, act=act, norm=norm))
                channels = width
            layers.append(Pool[Pool.MAX, spatial_dims](kernel_size=stride, stride=stride))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Sequential(
            Convolution(spatial_dims, features[4], fc_features, kernel_size=fc_kernel, act=act, norm=None,
                        dropout=dropout or None, adn_ordering="AD"),
            Convolution(spatial_dims, fc_features, fc_features, kernel_size=1, act=act, norm=None,
                        dropout=dropout or None, adn_ordering="AD"),
        )
        self.score_fr = Convolution(spatial_dims, fc_features, out_channels, kernel_size=1, conv_only=True)
        # Upsampling factors: pool5 -> pool4 -> pool3 -> input.
        to_pool4 = self.strides[4]
        to_pool3 = self.strides[3]
        below_pool3 = cumulative_stride(self.strides[:3], spatial_dims)
        below_pool4 = cumulative_stride(self.strides[:4], spatial_dims)
        # Layers a variant does not use are None, so one forward serves all three (and TorchScript skips them).
        self.upscore_pool5: nn.Module | None = None
        self.score_pool4: nn.Module | None = None
        self.upscore_pool4: nn.Module | None = None
        self.score_pool3: nn.Module | None = None
        if variant == "32s":
            self.upscore_final = _ScoreUpsample(spatial_dims, out_channels, self.size_divisor)
        elif variant == "16s":
            self.upscore_pool5 = _ScoreUpsample(spatial_dims, out_channels, to_pool4)
            self.score_pool4 = Convolution(spatial_dims, features[3], out_channels, kernel_size=1, conv_only=True)
            self.upscore_final = _ScoreUpsample(spatial_dims, out_channels, below_pool4)
        else:
            self.upscore_pool5 = _ScoreUpsample(spatial_dims, out_channels, to_pool4)
            self.score_pool4 = Convolution(spatial_dims, features[3], out_channels, kernel_size=1, conv_only=True)
            self.upscore_pool4 = _ScoreUpsample(spatial_dims, out_channels, to_pool3)
            self.score_pool3 = Convolution(spatial_dims, features[2], out_channels, kernel_size=1, conv_only=True)
            self.upscore_final = _ScoreUpsample(spatial_dims, out_channels, below_pool3)

        self.blocks.apply(init_kaiming)
        self.fc.apply(init_kaiming)
        for score in (self.score_fr, self.score_pool4, self.score_pool3):
            if score is not None:
                nn.init.zeros_(score.conv.weight)
                nn.init.zeros_(score.conv.bias)
        if spatial_dims == 3:
            fold_unit_axes(self)  # convolutions with kernel 1 on an axis as 2D ones over its slices: same output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x`` (N, in_channels, *spatial); returns (N, out_channels, *spatial).

        Raises:
            ValueError: if ``x`` does not have ``spatial_dims + 2`` dimensions.
        """
        check_input_dims(x, self.spatial_dims)
        size: List[int] = [int(s) for s in x.shape[2:]]
        hidden, before = pad_to_multiple(x, self.size_divisor, self.pad_mode)
        pooled: List[torch.Tensor] = []
        for block in self.blocks:
            hidden = block(hidden)
            pooled.append(hidden)
        score = self.score_fr(self.fc(hidden))
        if self.upscore_pool5 is not None and self.score_pool4 is not None:
            score = self.upscore_pool5(score) + self.score_pool4(pooled[3])
        if self.upscore_pool4 is not None and self.score_pool3 is not None:
            score = self.upscore_pool4(score) + self.score_pool3(pooled[2])
        return crop_spatial(self.upscore_final(score), before, size)


class FCN32s(FCN):
    """FCN-32s: :class:`FCN` with ``variant="32s"``; takes every other :class:`FCN` argument."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, **kwargs) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, variant="32s", **kwargs)


class FCN16s(FCN):
    """FCN-16s: :class:`FCN` with ``variant="16s"``; takes every other :class:`FCN` argument."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, **kwargs) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, variant="16s", **kwargs)


class FCN8s(FCN):
    """FCN-8s: :class:`FCN` with ``variant="8s"``; takes every other :class:`FCN` argument."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, **kwargs) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, variant="8s", **kwargs)
