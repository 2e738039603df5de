"""U-Net on MONAI's DynUNet, behind the same constructor and output contract as :class:`UNetPlusPlus`.

A bundle switches between the two by changing the ``_target_`` line: both take ``spatial_dims``,
``in_channels``, ``out_channels``, ``depth``, ``strides`` (one entry per downsampling), ``kernel_sizes``
(one per level), ``features``, ``base_features``, ``norm``, ``act``, ``dropout``, ``upsample``,
``deep_supervision``, ``pad_mode``, ``size_divisor`` and ``bias``; both return one tensor in eval
mode and, in training with deep supervision, a tensor with the outputs stacked along dim 1, the
network's main output first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List

import torch
import torch.nn.functional as F
from monai.networks.nets import DynUNet
from torch import nn

from pipeline.networks.common import (
    check_input_dims,
    check_pad_mode,
    crop_spatial,
    pad_to_multiple,
    per_level_sizes,
    resolve_depth_and_features,
    resolve_size_divisor,
)
from pipeline.networks.unit_axis import fold_unit_axes

__all__ = ["UNet"]


class UNet(nn.Module):
    """U-Net with per-level (anisotropic) strides and kernels and optional deep supervision (MONAI DynUNet).

    Each level has two convolutions with normalisation and activation; the first convolution of levels
    1..depth is strided (DynUNet's downsampling) and the decoder upsamples with transposed convolutions.
    DynUNet's convolutions have no bias; ``bias`` applies to its transposed convolutions.

    Input sizes: as in :class:`UNetPlusPlus`, any size is accepted; the input is padded (``pad_mode``,
    split evenly around the image) to a multiple of ``size_divisor`` (default: the product of the
    strides) and the output is cropped back to the input's size.

    Output contract:

    - training mode with ``deep_supervision=True``: (N, 1 + deep_supervision_heads, C, *spatial); ``out[:, 0]``
      is the full decoder's output (what eval mode returns) and ``out[:, k]`` is the head on the decoder level k
      steps coarser, interpolated (nearest) to full size. Main output first, as in :class:`UNetPlusPlus`;
      ``torch.unbind(out, dim=1)`` is the list ``monai.losses.DeepSupervisionLoss`` takes.
    - otherwise: one tensor (N, C, *spatial).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: number of downsamplings, 1 to 6; default ``len(strides)`` or 4. DynUNet itself needs at least 2:
            depth 1 takes the input block, the first down block (as the bottleneck), the last up block and the
            output block of a depth-2 DynUNet, which are the blocks a depth-1 DynUNet would have.
        strides: downsampling factor per level transition, ``depth`` entries (int or one per axis); default 2.
        kernel_sizes: kernel size per level, ``depth + 1`` entries; default 3.
        features: channels per level, ``depth + 1`` entries; default ``base_features * 2**i``.
        base_features: channels of level 0 when ``features`` is not given.
        norm: MONAI norm name or (name, args), or None.
        act: MONAI activation name or (name, args), or None.
        dropout: dropout probability (0 for none).
        upsample: only ``"deconv"`` (DynUNet upsamples with transposed convolutions).
        deep_supervision: return the auxiliary heads in training mode.
        deep_supervision_heads: number of auxiliary heads, 1..depth-1 (0 at depth 1, whose one decoder level is the
            output); default depth-1 (so the stacked output has ``depth`` entries, like UNet++'s).
        pad_mode: ``"constant"`` (zeros), ``"replicate"`` or ``"reflect"``.
        size_divisor: per-axis multiple the input is padded to; default the product of the strides.
        bias: bias of the transposed convolutions.

    Raises:
        ValueError: on a depth outside 1..6, an unsupported upsampling mode, a head count outside
            1..depth-1 (other than 0 at depth 1), or per-level arguments whose length does not match the depth.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        depth: int | None = None,
        strides: Sequence[Sequence[int] | int] | int | None = None,
        kernel_sizes: Sequence[Sequence[int] | int] | int | None = None,
        features: Sequence[int] | None = None,
        base_features: int = 32,
        norm: tuple | str | None = "batch",
        act: tuple | str | None = "relu",
        dropout: float | None = 0.0,
        upsample: str = "deconv",
        deep_supervision: bool = False,
        deep_supervision_heads: int | None = None,
        pad_mode: str = "constant",
        size_divisor: Sequence[int] | int | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        depth, features = resolve_depth_and_features(
            spatial_dims, depth, strides, features, base_features, (1, 6), network_name="U-Net"
        )
        if upsample != "deconv":
            raise ValueError(f"the U-Net (DynUNet) supports only upsample='deconv', got {upsample!r}")
        if deep_supervision_heads is None:
            deep_supervision_heads = depth - 1
        fewest_heads = min(1, depth - 1)
        if not fewest_heads <= deep_supervision_heads <= depth - 1:
            raise ValueError(f"deep_supervision_heads must be between {fewest_heads} and depth-1={depth - 1}, "
                             f"got {deep_supervision_heads}")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.strides = per_level_sizes(strides, depth, spatial_dims, 2, "strides")
        self.kernel_sizes = per_level_sizes(kernel_sizes, depth + 1, spatial_dims, 3, "kernel_sizes")
        self.features = features
        self.deep_supervision = bool(deep_supervision)
        self.pad_mode = check_pad_mode(pad_mode)
        self.size_divisor: List[int] = resolve_size_divisor(size_divisor, self.strides, spatial_dims)
        # depth 1: a depth-2 DynUNet whose second level repeats the first; only its level-0/1 blocks are kept
        donor_levels = max(depth, 2)
        dynunet = DynUNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=(self.kernel_sizes + self.kernel_sizes[-1:])[: donor_levels + 1],
            strides=[(1,) * spatial_dims] + (self.strides + self.strides[-1:])[:donor_levels],
            upsample_kernel_size=(self.strides + self.strides[-1:])[:donor_levels],
            filters=(features + features[-1:])[: donor_levels + 1],
            dropout=dropout or None,
            norm_name=norm if norm is not None else "",
            act_name=act if act is not None else "",
            deep_supervision=self.deep_supervision and deep_supervision_heads > 0,
            deep_supr_num=max(deep_supervision_heads, 1),
            trans_bias=bias,
        )
        # DynUNet's own forward passes the heads through a list shared between modules, which TorchScript
        # cannot script; its blocks are taken as they are and driven by the loop in ``forward``.
        self.input_block = dynunet.input_block
        if depth == 1:
            self.downsamples = nn.ModuleList()
            self.bottleneck = dynunet.downsamples[0]
            self.upsamples = nn.ModuleList([dynunet.upsamples[-1]])
        else:
            self.downsamples = dynunet.downsamples
            self.bottleneck = dynunet.bottleneck
            self.upsamples = dynunet.upsamples
        self.output_block = dynunet.output_block
        self.supervision_heads = (dynunet.deep_supervision_heads if self.deep_supervision and deep_supervision_heads > 0
                                  else nn.ModuleList())
        if spatial_dims == 3:
            fold_unit_axes(self)  # (3, 3, 1) levels as 2D convolutions over the slices: same weights and output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x`` (N, in_channels, *spatial).

        Returns:
            Training with deep supervision: (N, 1 + deep_supervision_heads, out_channels, *spatial), main output
            first. Otherwise: (N, out_channels, *spatial).

        Raises:
            ValueError: if ``x`` does not have ``spatial_dims + 2`` dimensions.
        """
        check_input_dims(x, self.spatial_dims)
        size: List[int] = [int(s) for s in x.shape[2:]]
        padded, before = pad_to_multiple(x, self.size_divisor, self.pad_mode)
        encoded: List[torch.Tensor] = [self.input_block(padded)]
        for down in self.downsamples:
            encoded.append(down(encoded[-1]))
        hidden = self.bottleneck(encoded[-1])
        decoded: List[torch.Tensor] = []
        for up in self.upsamples:
            hidden = up(hidden, encoded.pop())
            decoded.append(hidden)
        out = self.output_block(decoded[-1])
        if self.training and self.deep_supervision:
            outputs: List[torch.Tensor] = [out]
            coarser = len(decoded) - 2
            for head in self.supervision_heads:
                outputs.append(F.interpolate(head(decoded[coarser]), size=out.shape[2:]))
                coarser -= 1
            out = torch.stack(outputs, dim=1)
        return crop_spatial(out, before, size)
