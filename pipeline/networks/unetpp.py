"""UNet++ (Zhou et al. 2018): nested dense skip pathways, deep supervision and pruning, 2D and 3D.

Node X^{i,j} sits at resolution level i (0 = full resolution) and column j. The backbone nodes are
X^{i,0} = conv(pool(X^{i-1,0})); every other node is

    X^{i,j} = conv(concat(X^{i,0}, ..., X^{i,j-1}, up(X^{i+1,j-1})))

where "conv" is two 3x3 (or per-level kernel) convolutions, each followed by normalisation and
activation, and "up" is a 2x2 transposed convolution (or an interpolation). A 1x1 head on X^{0,l}
gives the output of the sub-network of depth l (l = 1..L); the sub-network needs only the nodes
with i + j <= l, which is what :meth:`UNetPlusPlus.prune` keeps.

MONAI's ``BasicUNetPlusPlus`` pools every axis at every level and always computes every node, so this
module assembles the nested network from MONAI's ``Convolution``, ``UpSample`` and pooling layers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import List

import torch
from monai.networks.blocks import Convolution, UpSample
from monai.networks.layers.factories import Pool
from torch import nn

from pipeline.networks.common import (
    check_input_dims,
    check_pad_mode,
    count_parameters,
    crop_spatial,
    init_kaiming,
    pad_to_multiple,
    per_level_sizes,
    resolve_depth_and_features,
    resolve_size_divisor,
)
from pipeline.networks.unit_axis import fold_unit_axes

__all__ = ["UNetPlusPlus", "NestedNode", "NestedLevel", "conv_block", "MAX_DEPTH"]

MAX_DEPTH = 6
UPSAMPLE_MODES = ("deconv", "nontrainable")
INFERENCE_OUTPUTS = ("deepest", "mean")


def conv_block(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Sequence[int] | int,
    norm: tuple | str | None,
    act: tuple | str | None,
    dropout: float | None,
    bias: bool = True,
) -> nn.Sequential:
    """Two 'same'-padded convolutions, each followed by normalisation, dropout and activation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels entering the first convolution.
        out_channels: channels of both convolutions.
        kernel_size: kernel size (int or one per axis).
        norm: MONAI norm name or (name, args); None for no normalisation.
        act: MONAI activation name or (name, args); None for no activation.
        dropout: dropout probability after each convolution; None or 0 for none.
        bias: whether the convolutions have a bias.

    Returns:
        An ``nn.Sequential`` of two MONAI ``Convolution`` blocks.
    """
    dropout = dropout or None
    return nn.Sequential(
        Convolution(spatial_dims, in_channels, out_channels, kernel_size=kernel_size,
                    act=act, norm=norm, dropout=dropout, bias=bias),
        Convolution(spatial_dims, out_channels, out_channels, kernel_size=kernel_size,
                    act=act, norm=norm, dropout=dropout, bias=bias),
    )


class NestedNode(nn.Module):
    """One node X^{i,j} (j >= 1) of the nested decoder.

    Args:
        row: resolution level i of the node.
        column: column j of the node (>= 1).
        upsample: module taking X^{i+1,j-1} to the resolution of level i.
        block: convolution block applied to the concatenation of X^{i,0..j-1} and the upsampled tensor.
    """

    def __init__(self, row: int, column: int, upsample: nn.Module, block: nn.Module) -> None:
        super().__init__()
        self.row = row
        self.column = column
        self.upsample = upsample
        self.block = block

    def forward(self, grid: List[List[torch.Tensor]]) -> torch.Tensor:
        """Compute X^{row,column} from ``grid`` (``grid[i][j]`` holds X^{i,j}); returns the node's tensor."""
        below = self.upsample(grid[self.row + 1][self.column - 1])
        same_level = grid[self.row][: self.column]
        return self.block(torch.cat(same_level + [below], dim=1))


class NestedLevel(nn.Module):
    """Everything that sub-network l adds to sub-network l-1: X^{l,0}, X^{l-1,1}, ..., X^{0,l} and the head on X^{0,l}.

    Args:
        level: l, from 1 to the network depth.
        downsample: pooling from level l-1 to level l.
        encoder: convolution block producing X^{l,0}.
        nodes: the nodes X^{l-1,1}, X^{l-2,2}, ..., X^{0,l} in this order (each needs the one before).
        head: 1x1 convolution on X^{0,l} giving the level's class scores.
    """

    def __init__(
        self, level: int, downsample: nn.Module, encoder: nn.Module, nodes: Sequence[NestedNode], head: nn.Module
    ) -> None:
        super().__init__()
        self.level = level
        self.downsample = downsample
        self.encoder = encoder
        self.nodes = nn.ModuleList(nodes)
        self.head = head

    def forward(self, grid: List[List[torch.Tensor]]) -> List[List[torch.Tensor]]:
        """Append this level's nodes to ``grid`` (rows 0..level-1 filled up to column level-1-row) and return it."""
        grid.append([self.encoder(self.downsample(grid[self.level - 1][0]))])
        for node in self.nodes:
            grid[node.row].append(node(grid))
        return grid


class UNetPlusPlus(nn.Module):
    """UNet++ with nested dense skips, optional deep supervision, anisotropic strides and pruning.

    Input sizes: any spatial size is accepted. The input is padded (``pad_mode``, zeros by default,
    split evenly around the image) up to a multiple of ``size_divisor`` on each axis, which defaults to
    the product of the strides (e.g. 16x16x1 for ``strides=[[2, 2, 1]] * 4``), and the output is cropped
    back, so the output has the input's spatial size. An input that is already a multiple is not padded.
    A 2-slice ISLES 2018 slab therefore needs strides that do not pool the slice axis (``[2, 2, 1]``).

    Output contract:

    - training mode with ``deep_supervision=True``: one tensor of shape (N, L, C, *spatial), the heads
      stacked along dim 1 with the deepest first: ``out[:, k]`` is the head on X^{0,L-k}, so ``out[:, 0]``
      is X^{0,L} (the usual inference output) and ``out[:, L-1]`` is X^{0,1}. This is the order of MONAI's
      ``DynUNet`` (main output first); ``torch.unbind(out, dim=1)`` is the list ``monai.losses.DeepSupervisionLoss``
      takes, which weighs its first entry most.
    - otherwise (eval mode, or training without deep supervision): one tensor (N, C, *spatial): the head on
      X^{0,inference_level} (``inference_output="deepest"``) or the mean of the heads on X^{0,1..inference_level}
      (``"mean"``). Only the nodes with i + j <= inference_level are computed.

    All L heads exist whether or not deep supervision is on, so checkpoints load either way; without deep
    supervision only the inference-level head is trained (distributed training then needs
    ``find_unused_parameters=True``).

    Pruning: ``prune(level)`` returns the depth-``level`` sub-network (shared or copied weights) whose eval output
    equals head ``level`` of this network; setting ``inference_level`` computes the same nodes without removing
    the others. Export: ``torch.jit.script`` works in both modes and for any size; ``torch.jit.trace`` records
    the padding of the traced input, so a traced module takes inputs that pad the same way.

    Speed: in 3D, the convolutions whose kernel is 1 along an axis (the (3, 3, 1) levels of an anisotropic
    network) run as 2D convolutions over the slices (:mod:`pipeline.networks.unit_axis`); same weights, same output.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (modalities).
        out_channels: output channels (classes).
        depth: number of downsamplings L, from 1 to 6; defaults to ``len(strides)`` if given, else 4.
        strides: pooling factor between level i and i+1, ``depth`` entries (int or one per axis); default 2.
        kernel_sizes: convolution kernel size per level, ``depth + 1`` entries; default 3.
        features: channels per level, ``depth + 1`` entries; default ``base_features * 2**i``.
        base_features: channels of level 0 when ``features`` is not given (the paper's 32).
        norm: MONAI norm for every convolution (``"batch"``, ``"instance"``, ``("group", {...})``, None).
        act: MONAI activation (default ReLU).
        dropout: dropout probability after every convolution (0 for none).
        upsample: ``"deconv"`` (transposed convolution to the lower level's width, as in the paper) or
            ``"nontrainable"`` (interpolation, keeping the deeper node's width).
        interp_mode: interpolation for ``"nontrainable"`` (``"linear"`` picks bi/trilinear, or ``"nearest"``).
        deep_supervision: return every head in training mode.
        inference_level: the sub-network used outside deep-supervised training (1..depth); default depth.
        inference_output: ``"deepest"`` or ``"mean"`` (see above).
        pad_mode: ``"constant"`` (zeros), ``"replicate"`` or ``"reflect"``.
        size_divisor: per-axis multiple the input is padded to; default the product of the strides.
        bias: whether the convolutions have biases (the paper's do).

    Raises:
        ValueError: on an out-of-range depth, inference level, unknown mode names, or per-level
            arguments whose length does not match the depth.
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
        interp_mode: str = "linear",
        deep_supervision: bool = False,
        inference_level: int | None = None,
        inference_output: str = "deepest",
        pad_mode: str = "constant",
        size_divisor: Sequence[int] | int | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        depth, features = resolve_depth_and_features(
            spatial_dims, depth, strides, features, base_features, (1, MAX_DEPTH)
        )
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if inference_output not in INFERENCE_OUTPUTS:
            raise ValueError(f"inference_output must be one of {INFERENCE_OUTPUTS}, got {inference_output!r}")
        inference_level = depth if inference_level is None else int(inference_level)
        if not 1 <= inference_level <= depth:
            raise ValueError(f"inference_level must be between 1 and depth={depth}, got {inference_level}")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.strides = per_level_sizes(strides, depth, spatial_dims, 2, "strides")
        self.kernel_sizes = per_level_sizes(kernel_sizes, depth + 1, spatial_dims, 3, "kernel_sizes")
        self.features = features
        self.deep_supervision = bool(deep_supervision)
        self.inference_level = inference_level
        self.inference_output = inference_output
        self.pad_mode = check_pad_mode(pad_mode)
        self.size_divisor: List[int] = resolve_size_divisor(size_divisor, self.strides, spatial_dims)
        self._config = dict(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, norm=norm, act=act,
            dropout=dropout, upsample=upsample, interp_mode=interp_mode, deep_supervision=deep_supervision,
            inference_output=inference_output, pad_mode=pad_mode, bias=bias,
        )

        def block(cin: int, cout: int, level: int) -> nn.Sequential:
            return conv_block(spatial_dims, cin, cout, self.kernel_sizes[level], norm, act, dropout, bias)

        def up(row: int) -> nn.Module:
            # up(X^{row+1, .}) to level ``row``; a transposed conv narrows to level row's width as in the paper.
            if upsample == "deconv":
                return UpSample(spatial_dims, features[row + 1], features[row], scale_factor=self.strides[row],
                                mode="deconv", bias=bias)
            linear = interp_mode.endswith("linear")
            return UpSample(spatial_dims, features[row + 1], features[row + 1], scale_factor=self.strides[row],
                            mode="nontrainable", pre_conv=None, interp_mode=interp_mode,
                            align_corners=True if linear else None)

        self.stem = block(in_channels, features[0], 0)
        levels = []
        for level in range(1, depth + 1):
            nodes = []
            for column in range(1, level + 1):
                row = level - column
                up_channels = features[row] if upsample == "deconv" else features[row + 1]
                node_block = block(column * features[row] + up_channels, features[row], row)
                nodes.append(NestedNode(row, column, up(row), node_block))
            stride = self.strides[level - 1]
            levels.append(
                NestedLevel(
                    level,
                    downsample=Pool[Pool.MAX, spatial_dims](kernel_size=stride, stride=stride),
                    encoder=block(features[level - 1], features[level], level),
                    nodes=nodes,
                    head=Convolution(spatial_dims, features[0], out_channels, kernel_size=1, conv_only=True, bias=True),
                )
            )
        self.levels = nn.ModuleList(levels)
        self.apply(init_kaiming)
        if spatial_dims == 3:
            fold_unit_axes(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x`` (N, in_channels, *spatial).

        Returns:
            Training with deep supervision: (N, depth, out_channels, *spatial), deepest head first.
            Otherwise: (N, out_channels, *spatial) from ``inference_level`` (see the class docstring).

        Raises:
            ValueError: if ``x`` does not have ``spatial_dims + 2`` dimensions or ``inference_level`` is out of range.
        """
        if self.training and self.deep_supervision:
            return self._run(x, self.depth, "stack")
        if self.inference_level < 1 or self.inference_level > self.depth:
            raise ValueError("inference_level must be between 1 and the network depth")
        if self.inference_output == "mean":
            return self._run(x, self.inference_level, "mean")
        return self._run(x, self.inference_level, "last")

    @torch.jit.export
    def all_heads(self, x: torch.Tensor) -> torch.Tensor:
        """Return every head, in any mode: (N, depth, out_channels, *spatial), ``out[:, k]`` from X^{0,depth-k}."""
        return self._run(x, self.depth, "stack")

    def _run(self, x: torch.Tensor, last_level: int, combine: str) -> torch.Tensor:
        """Compute the nodes of sub-network ``last_level``; return its own head (``"last"``), all its heads
        stacked along dim 1 deepest first (``"stack"``) or their mean (``"mean"``), cropped to the input size."""
        check_input_dims(x, self.spatial_dims)
        size: List[int] = [int(s) for s in x.shape[2:]]
        padded, before = pad_to_multiple(x, self.size_divisor, self.pad_mode)
        grid: List[List[torch.Tensor]] = [[self.stem(padded)]]
        heads: List[torch.Tensor] = []
        for stage in self.levels:
            if stage.level <= last_level:
                grid = stage(grid)
                if combine != "last" or stage.level == last_level:
                    heads.insert(0, stage.head(grid[0][stage.level]))
        if combine == "stack":
            out = torch.stack(heads, dim=1)
        elif combine == "mean":
            out = torch.stack(heads, dim=0).mean(dim=0)
        else:
            out = heads[0]
        return crop_spatial(out, before, size)

    def compute_nodes(self, x: torch.Tensor, level: int | None = None) -> list[list[torch.Tensor]]:
        """Return every node of sub-network ``level`` (default: all): ``grid[i][j]`` is X^{i,j}.

        The nodes are computed on the padded input (see the class docstring), so for inputs that are not
        a multiple of ``size_divisor`` they are larger than the input.

        Raises:
            ValueError: if ``level`` is not between 1 and the depth.
        """
        level = self.depth if level is None else level
        self._check_level(level)
        padded, _ = pad_to_multiple(x, self.size_divisor, self.pad_mode)
        grid: List[List[torch.Tensor]] = [[self.stem(padded)]]
        for stage in list(self.levels)[:level]:
            grid = stage(grid)
        return grid

    def head(self, level: int) -> nn.Module:
        """Return the 1x1 head on X^{0,level} (level 1..depth).

        Raises:
            ValueError: if ``level`` is not between 1 and the depth.
        """
        self._check_level(level)
        return self.levels[level - 1].head

    def prune(self, level: int, copy_weights: bool = False) -> "UNetPlusPlus":
        """Return the sub-network of depth ``level``: only the nodes X^{i,j} with i + j <= level and head ``level``.

        In eval mode its output equals this network's head on X^{0,level} (``all_heads(x)[:, depth - level]``)
        exactly, for any input size: it keeps this network's ``size_divisor`` so it pads the same way.

        Args:
            level: 1..depth.
            copy_weights: False shares the modules (and weights) with this network; True gives independent copies.

        Returns:
            A ``UNetPlusPlus`` of depth ``level`` with ``inference_level = level``, in this network's train/eval mode.

        Raises:
            ValueError: if ``level`` is not between 1 and the depth.
        """
        self._check_level(level)
        pruned = UNetPlusPlus(
            **self._config,
            depth=level,
            strides=self.strides[:level],
            kernel_sizes=self.kernel_sizes[: level + 1],
            features=self.features[: level + 1],
            inference_level=level,
            size_divisor=self.size_divisor,
        )
        stem, levels = self.stem, list(self.levels)[:level]
        if copy_weights:
            stem, levels = copy.deepcopy(stem), copy.deepcopy(levels)
        pruned.stem = stem
        pruned.levels = nn.ModuleList(levels)
        return pruned.train(self.training)

    def parameter_counts(self) -> dict[int, int]:
        """Return the trainable parameter count of ``prune(level)`` for each level 1..depth (its heads 1..level included)."""
        counts = {}
        total = count_parameters(self.stem)
        for stage in self.levels:
            total += count_parameters(stage)
            counts[stage.level] = total
        return counts

    def _check_level(self, level: int) -> None:
        if not 1 <= int(level) <= self.depth:
            raise ValueError(f"level must be between 1 and the depth {self.depth}, got {level}")
