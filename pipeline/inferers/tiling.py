"""Tile plans of the overlap-tile inferer: the default margin, AxisPlan, TilePlan, valid-convolution output sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["AUTO_MARGIN_FRACTION", "AxisPlan", "DEFAULT_MAX_TILE_VOXELS", "TilePlan", "auto_margin"]

# Context added on each side of a tile of a same-padded network, as a fraction of the tile size (see auto_margin).
AUTO_MARGIN_FRACTION = 3.0 / 16.0
# How far to look for a valid tile size of a valid-convolution network before giving up.
_SIZE_SEARCH_LIMIT = 4096
# Default bound on one grown tile's network input, in voxels (2**21: 256x256x32, or 128x128x128). The memory a
# network needs grows with it times the network's width (the measured peaks are in benchmarks/results*.md).
DEFAULT_MAX_TILE_VOXELS = 2**21


def auto_margin(tile_size: int, whole_axis: bool) -> int:
    """Default context margin of a same-padded network on one axis.

    Args:
        tile_size: the tile's output size on that axis.
        whole_axis: whether one tile spans the whole axis.

    Returns:
        0 when one tile spans the whole axis (the network sees that axis exactly as in training, e.g. the two
        slices of a thick slab), else ``ceil(3 * tile_size / 16)``: 24 for a 128-voxel tile, whose network input
        is then 176 (a multiple of UNet++'s 16). On a 256x256 slab this is 4 tiles of 176x176 against the 9 of
        128x128 of ``SlidingWindowInferer(overlap=0.5, mode="gaussian")``; smaller margins leave the voxels near
        tile borders less context.
    """
    return 0 if whole_axis else max(1, math.ceil(tile_size * AUTO_MARGIN_FRACTION))


@dataclass(frozen=True)
class AxisPlan:
    """How one spatial axis is tiled.

    Attributes:
        size: the volume's size on the axis.
        tile: output (core) size of every tile.
        margin: context on each side of a tile; the network's input is ``tile + 2 * margin``.
        starts: first output voxel of each tile, in volume coordinates; the last tile of a valid-convolution
            network may end past the volume (the surplus is mirrored context and its output is dropped).
        padding_mode: the mode this axis is extended with: the inferer's ``padding_mode`` after the
            reflect -> symmetric -> replicate fallback, decided by ``margin`` (see :func:`mirror_pad`). The surplus
            of a valid network's last tile continues the same mirroring periodically; its output is dropped.
        pad_after: context needed past the end of the volume (``margin``, plus the last tile's surplus).
    """

    size: int
    tile: int
    margin: int
    starts: tuple[int, ...]
    padding_mode: str
    pad_after: int

    @property
    def network_input(self) -> int:
        """Size of a tile as the network sees it, ``tile + 2 * margin``."""
        return self.tile + 2 * self.margin


@dataclass(frozen=True)
class TilePlan:
    """The tile grid of :meth:`OverlapTileInferer.plan`, with its cost.

    Attributes:
        spatial_shape: the volume's spatial size.
        axes: one :class:`AxisPlan` per spatial axis.
        valid_conv: whether the network's output is smaller than its input (valid convolutions).
        batch_size: images in the input batch (N).
        sw_batch_size: tiles per network call.
        passes: network calls per batch of tiles (members of an ensemble x (1 + TTA flips)).
    """

    spatial_shape: tuple[int, ...]
    axes: tuple[AxisPlan, ...]
    valid_conv: bool
    batch_size: int
    sw_batch_size: int
    passes: int

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of tiles along each axis."""
        return tuple(len(axis.starts) for axis in self.axes)

    @property
    def num_tiles(self) -> int:
        """Tiles per image."""
        return math.prod(self.grid)

    @property
    def tile_size(self) -> tuple[int, ...]:
        """Output (core) size of a tile per axis."""
        return tuple(axis.tile for axis in self.axes)

    @property
    def margin(self) -> tuple[int, ...]:
        """Context on each side of a tile per axis."""
        return tuple(axis.margin for axis in self.axes)

    @property
    def input_size(self) -> tuple[int, ...]:
        """Spatial size of a tile as the network sees it."""
        return tuple(axis.network_input for axis in self.axes)

    @property
    def network_calls(self) -> int:
        """Forward calls of the network(s) for the whole batch: batches of tiles x passes."""
        return math.ceil(self.batch_size * self.num_tiles / self.sw_batch_size) * self.passes

    @property
    def network_voxels(self) -> int:
        """Voxels fed through the network(s) for the whole batch (a cost measure independent of batching)."""
        return self.batch_size * self.num_tiles * math.prod(self.input_size) * self.passes


class _ValidSizes:
    """Valid output sizes of a valid-convolution network, axis by axis, through its public ``input_size_for``.

    ``input_size_for`` judges all axes at once, so a size is tested on one axis with the others held at a
    combination known to be valid.
    """

    def __init__(self, network: Any, targets: Sequence[int]) -> None:
        self.network = network
        self.reference = self._find_reference([int(t) for t in targets])

    def _fits(self, sizes: Sequence[int]) -> bool:
        try:
            self.network.input_size_for(tuple(int(s) for s in sizes))
        except ValueError:
            return False
        return True

    def _find_reference(self, targets: list[int]) -> list[int]:
        if self._fits(targets):
            return targets
        for size in range(1, _SIZE_SEARCH_LIMIT):
            if self._fits([size] * len(targets)):
                return [size] * len(targets)
        raise ValueError(
            "could not find a valid output size for the network through input_size_for; give roi_size as a "
            "size the network accepts"
        )

    def valid(self, axis: int, size: int) -> bool:
        """Whether ``size`` is a valid output size on ``axis``."""
        sizes = list(self.reference)
        sizes[axis] = size
        return size >= 1 and self._fits(sizes)

    def at_most(self, axis: int, size: int) -> int | None:
        """Largest valid output size <= ``size`` on ``axis``, or None."""
        return next((s for s in range(size, 0, -1) if self.valid(axis, s)), None)

    def at_least(self, axis: int, size: int) -> int:
        """Smallest valid output size >= ``size`` on ``axis``.

        Raises:
            ValueError: if none is found within a few thousand voxels.
        """
        for s in range(max(size, 1), max(size, 1) + _SIZE_SEARCH_LIMIT):
            if self.valid(axis, s):
                return s
        raise ValueError(f"no valid output size at or above {size} on axis {axis}")

    def period(self, axis: int, size: int) -> int:
        """Spacing between valid output size ``size`` and the next one (the pooling grid the tiles must follow)."""
        return self.at_least(axis, size + 1) - size
