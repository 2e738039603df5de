"""Overlap-tile inference (Ronneberger et al. 2015) as a MONAI ``Inferer``, with flip TTA and checkpoint ensembles.

:class:`OverlapTileInferer` is the path :func:`~pipeline.inferers.segmentation_inferer` takes for tile-independent
networks; it is also usable on its own. The volume is extended by the network's context margin by mirroring, split
into tiles, and every output tile is taken from the centre of its input tile, so neighbouring tiles join without
seams:

- valid-convolution networks (anything exposing ``margin``, ``output_size`` and ``input_size_for``, such as
  :class:`pipeline.networks.ValidUNet`) give exactly the result of the network applied to the mirror-padded
  whole volume: the margin is the network's, and tiles start on its pooling grid;
- same-padded networks (UNet, UNet++) see ``margin`` extra voxels of context on each side of every tile
  (mirrored at the volume border); those voxels of the tile's output, where the network saw its own zero
  padding instead of the neighbouring image, are discarded before stitching. MONAI's ``SlidingWindowInferer``
  instead down-weights tile borders by averaging tiles that overlap by half, which takes more tiles.

Tile size: by default every tile is ``roi_size`` (plus its margins). With ``max_tile_voxels`` set, same-padded
networks that say which input sizes they compute without waste (a ``size_divisor``, as every network of
:mod:`pipeline.networks` does) get tiles grown beyond ``roi_size`` while one tile's network input stays within
it: axis by axis, the number of tiles that feeds the fewest voxels through the network, every tile's input
rounded up to the divisor (an ISLES slab of 256x256xN becomes one whole-volume pass). Growth is opt-in because
a network with instance normalisation normalises over its whole input: its output depends on the tile's size
and content, and a model trained on small, lesion-centred patches can predict much worse on larger tiles.
:func:`~pipeline.inferers.segmentation_inferer` therefore grows tiles only for networks whose output does not
depend on the tile (valid convolutions, batch normalisation in eval mode), where this inferer is exact and
cheaper, and gives every other network MONAI's windows of the training patch.

Tile planning (:class:`~pipeline.inferers.tiling.TilePlan`, :class:`~pipeline.inferers.tiling.AxisPlan`) is in
:mod:`pipeline.inferers.tiling`; the planning methods that choose the tiles are this class's.

Output contract (``activation``):

- one network, no TTA: the network's raw output, like MONAI's inferers (``activation=None``, the default),
  so post-processing such as ``Activationsd(softmax=True)`` + ``AsDiscreted(argmax=True)`` works unchanged;
  with ``activation`` set, its probabilities.
- TTA flips and/or several networks: the *mean of the probabilities*. ``activation`` (``"softmax"``,
  ``"sigmoid"`` or a callable) is applied to every prediction before averaging and must be given; the result
  is a probability map (drop ``Activationsd`` from post-processing; ``AsDiscreted(argmax=True)`` still works).

Memory: besides the input, only the output volume, one batch of tiles (at most ``sw_batch_size`` x
``max_tile_voxels`` voxels when tiles grow) and per-axis 1-D weight vectors are allocated (tile borders are
mirrored per tile, never by padding the whole volume; the Gaussian normaliser is separable, so no weight volume
is needed); results are accumulated in place. A single tile that is the whole volume is passed to the network
without a copy, and its output is returned as it is.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.data.meta_tensor import MetaTensor
from monai.data.utils import compute_importance_map
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type
from torch import nn

from pipeline.inferers.ensemble import _resolve_activation, _single_tensor
from pipeline.inferers.network_traits import _network_margin, is_valid_conv, size_divisor_of
from pipeline.inferers.padding import PADDING_MODES, _axis_padding_mode, _fold_index
from pipeline.inferers.roi import checked_roi_size
from pipeline.inferers.tiling import AxisPlan, TilePlan, _ValidSizes, auto_margin

__all__ = ["BLEND_MODES", "OverlapTileInferer"]

BLEND_MODES = ("constant", "gaussian")


@dataclass(frozen=True)
class _AxisTiles:
    """Per tile on one axis: where its input comes from and where its output goes (precomputed once per call)."""

    sources: tuple[tuple[int, int, torch.Tensor | None, torch.Tensor | None], ...]  # (lo, length, index, zero mask)
    targets: tuple[tuple[int, int, int], ...]  # (first output voxel, count, offset in the network output)
    weights: tuple[torch.Tensor | None, ...]  # gaussian weights of the written voxels; None for constant
    normaliser: torch.Tensor | None  # 1 / sum of weights along the axis; None when nothing is blended


# Own tiling instead of MONAI's sliding_window_inference, which has no mirror padding or valid-centre cropping.
class OverlapTileInferer(Inferer):
    """Overlap-tile inference with mirrored borders, valid-centre cropping, flip TTA and ensembles.

    Usable from a MONAI bundle (``_target_: pipeline.inferers.OverlapTileInferer``) wherever a
    ``SlidingWindowInferer`` goes. See the module docstring for the output contract.

    Args:
        roi_size: output size of a tile per spatial axis (an int applies to every axis). ``-1`` or a size at
            least the volume's means one tile spans the whole axis (e.g. ``[128, 128, -1]`` for thick slabs).
            Valid-convolution networks use the largest valid output size not above it (or the smallest valid one).
            For same-padded networks with a ``size_divisor`` it is the smallest tile: tiles grow up to
            ``max_tile_voxels`` (see the module docstring).
        sw_batch_size: tiles per network call.
        margin: same-padded networks only: per axis (or one int for all), voxels of context added on each
            side of a tile and discarded from its output. None (default) uses :func:`auto_margin` of
            ``roi_size``: 3/16 of it (24 for 128) on tiled axes, 0 on axes one tile spans (grown tiles keep the
            margin of ``roi_size``). Valid-convolution networks always use their own ``margin``; passing a
            different one raises ValueError.
        overlap: fraction of a tile's output shared with its neighbour, in [0, 1). The default 0 lets tile
            outputs abut (the volume still gets ``ceil(size / tile)`` tiles, spread evenly, so they may overlap
            a little); the network inputs always overlap by ``2 * margin``.
        blend_mode: where tile outputs overlap, ``"constant"`` takes each voxel from the tile whose centre is
            nearest (the overlap is split at its middle: no averaging, exact for valid convolutions);
            ``"gaussian"`` averages them with MONAI's Gaussian importance weights (``sigma_scale`` x tile). The
            weights are kept separable (per-axis 1-D curves, each floored at 1e-3, where MONAI floors the N-D
            product), so the normaliser needs no weight volume; tile borders thus weigh less than in MONAI.
        sigma_scale: Gaussian sigma as a fraction of the tile size (per axis or one float).
        padding_mode: how the volume is extended by the margin: ``"reflect"`` (default, the U-Net paper's
            mirroring), ``"symmetric"``, ``"replicate"`` or ``"constant"`` (zeros). On an axis too short for the
            pad (a 2-slice slab with a margin above 1) reflect falls back to symmetric, then to replicate.
        tta_flips: None, or a list of sets of spatial axes (0-based) to flip, e.g. ``[[0], [1], [0, 1]]``. Every
            tile is predicted unflipped and once per set (flipped, predicted, flipped back); the probabilities are
            averaged, which needs ``activation``.
        activation: None (default: raw network output, and no averaging allowed), ``"softmax"`` (over the
            channels), ``"sigmoid"`` or a callable; applied to every prediction before TTA/ensemble averaging.
        device: where the stitched output is accumulated (default: the input's device).
        sw_device: where tiles are sent and the network runs (default: the input's device).
        progress: show a tqdm progress bar over the batches of tiles.
        max_tile_voxels: same-padded networks with a ``size_divisor`` only: the most voxels one tile's network
            input may have when tiles grow beyond ``roi_size`` (e.g. :data:`DEFAULT_MAX_TILE_VOXELS`, 2**21);
            None (default) keeps every tile at ``roi_size`` (see the module docstring for why). When even the
            smallest tiles (``roi_size``, their input rounded up to the divisor) exceed it, those are used.

    Raises:
        ValueError: on a roi size of 0 or below -1, an overlap outside [0, 1), a negative margin, an unknown
            blend/padding mode or activation, a non-positive ``sw_batch_size`` or ``max_tile_voxels``, or
            malformed ``tta_flips``.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        sw_batch_size: int = 1,
        margin: Sequence[int] | int | None = None,
        overlap: float = 0.0,
        blend_mode: str = "constant",
        sigma_scale: Sequence[float] | float = 0.125,
        padding_mode: str = "reflect",
        tta_flips: Sequence[Sequence[int]] | None = None,
        activation: str | Callable | None = None,
        device: torch.device | str | None = None,
        sw_device: torch.device | str | None = None,
        progress: bool = False,
        max_tile_voxels: int | None = None,
    ) -> None:
        super().__init__()
        self.roi_size = checked_roi_size(roi_size)
        if int(sw_batch_size) < 1:
            raise ValueError(f"sw_batch_size must be at least 1, got {sw_batch_size}")
        self.sw_batch_size = int(sw_batch_size)
        if margin is not None:
            margin = (int(margin),) if isinstance(margin, int) else tuple(int(m) for m in margin)
            if any(m < 0 for m in margin):
                raise ValueError(f"margin must be non-negative, got {margin}")
        self.margin = margin
        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        self.overlap = float(overlap)
        if blend_mode not in BLEND_MODES:
            raise ValueError(f"blend_mode must be one of {BLEND_MODES}, got {blend_mode!r}")
        self.blend_mode = blend_mode
        self.sigma_scale = sigma_scale
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.tta_flips = self._check_flips(tta_flips)
        self.activation = activation
        self._activation = _resolve_activation(activation)
        self.device = device
        self.sw_device = sw_device
        self.progress = bool(progress)
        if max_tile_voxels is not None and int(max_tile_voxels) < 1:
            raise ValueError(f"max_tile_voxels must be positive or None, got {max_tile_voxels}")
        self.max_tile_voxels = None if max_tile_voxels is None else int(max_tile_voxels)

    @staticmethod
    def _check_flips(tta_flips: Sequence[Sequence[int]] | None) -> tuple[tuple[int, ...], ...]:
        if tta_flips is None:
            return ()
        flips = []
        for entry in tta_flips:
            axes = (int(entry),) if isinstance(entry, int) else tuple(sorted({int(a) for a in entry}))
            if any(a < 0 for a in axes):
                raise ValueError(f"tta_flips entries are sets of spatial axes counted from 0, got {list(tta_flips)}")
            if axes and axes not in flips:  # the unflipped prediction is always made once
                flips.append(axes)
        return tuple(flips)

    # ------------------------------------------------------------------ planning

    def plan(self, spatial_shape: Sequence[int], network: Any = None, batch_size: int = 1) -> TilePlan:
        """Return the tile grid for a volume of ``spatial_shape`` and its cost, without running anything.

        Args:
            spatial_shape: the input's spatial size (H, W[, D]).
            network: the network (or sequence of networks) that will run; it decides whether the tiles follow
                a valid-convolution geometry. None plans for a same-padded network.
            batch_size: images in the input batch.

        Returns:
            A :class:`TilePlan` (``num_tiles``, ``network_calls``, ``grid``, ``input_size``, ...).

        Raises:
            ValueError: if ``roi_size``/``margin`` do not match the number of spatial axes, a valid-convolution
                network gets a different margin or has no usable tile size, or ensemble members disagree.
        """
        networks = self._members(network) if network is not None else [None]
        return self._plan(tuple(int(s) for s in spatial_shape), networks, int(batch_size))

    @staticmethod
    def _members(network: Any) -> list[Any]:
        if isinstance(network, (list, tuple, nn.ModuleList)):
            members = list(network)
            if not members:
                raise ValueError("network must be a network or a non-empty sequence of networks")
            return members
        return [network]

    def _plan(self, shape: tuple[int, ...], networks: list[Any], batch_size: int) -> TilePlan:
        dims = len(shape)
        roi = self._per_axis(self.roi_size, dims, "roi_size")
        valid = [net is not None and is_valid_conv(net) for net in networks]
        if any(valid) and not all(valid):
            raise ValueError("an ensemble cannot mix valid-convolution and same-padded networks")
        if all(valid):
            margins = {_network_margin(net, dims) for net in networks}
            if len(margins) > 1:
                raise ValueError(f"the networks of an ensemble must share one margin, got {sorted(margins)}")
            axes = self._plan_valid(shape, roi, networks[0])
        else:
            divisor = None if networks[0] is None else size_divisor_of(networks, dims)
            if divisor is None or self.max_tile_voxels is None:
                axes = self._plan_same(shape, roi)
            else:
                axes = self._plan_grown(shape, roi, divisor, self.max_tile_voxels)
        return TilePlan(
            spatial_shape=shape,
            axes=tuple(axes),
            valid_conv=all(valid),
            batch_size=batch_size,
            sw_batch_size=self.sw_batch_size,
            passes=len(networks) * (1 + len(self.tta_flips)),
        )

    @staticmethod
    def _per_axis(values: tuple[int, ...], dims: int, name: str) -> tuple[int, ...]:
        if len(values) == 1:
            return values * dims
        if len(values) != dims:
            raise ValueError(
                f"{name} must have one entry per spatial axis ({dims}) or a single value, got {list(values)}"
            )
        return values

    def _plan_same(self, shape: tuple[int, ...], roi: tuple[int, ...]) -> list[AxisPlan]:
        margin = self._per_axis(self.margin, len(shape), "margin") if self.margin is not None else None
        axes = []
        for axis, size in enumerate(shape):
            whole = roi[axis] == -1 or roi[axis] >= size
            tile = size if whole else roi[axis]
            count = 1 if whole else math.ceil((size - tile) / self._step(tile)) + 1
            # Tiles are spread evenly over the axis, the last one ending at the volume's end.
            starts = tuple(round(i * (size - tile) / (count - 1)) for i in range(count)) if count > 1 else (0,)
            m = margin[axis] if margin is not None else auto_margin(tile, whole)
            axes.append(AxisPlan(size, tile, m, starts, _axis_padding_mode(self.padding_mode, m, size), m))
        return axes

    def _step(self, tile: int) -> int:
        return max(1, math.floor(tile * (1.0 - self.overlap)))

    def _count(self, size: int, tile: int) -> int:
        """Tiles of ``tile`` voxels that cover an axis of ``size`` with this inferer's overlap."""
        return 1 if tile >= size else math.ceil((size - tile) / self._step(tile)) + 1

    def _plan_grown(
        self, shape: tuple[int, ...], roi: tuple[int, ...], divisor: tuple[int, ...], max_voxels: int
    ) -> list[AxisPlan]:
        """Tiles of at least ``roi``, grown to the fewest network-input voxels within ``max_voxels`` per tile."""
        margin = self._per_axis(self.margin, len(shape), "margin") if self.margin is not None else None
        options = [
            self._grown_axis_options(size, r, None if margin is None else margin[axis], divisor[axis])
            for axis, (size, r) in enumerate(zip(shape, roi))
        ]

        def padded(axis_plan: AxisPlan, d: int) -> int:  # the size the network computes on (it pads to d)
            return math.ceil(axis_plan.network_input / d) * d

        best, best_cost = None, None
        for combo in itertools.product(*options):
            voxels = math.prod(padded(a, d) for a, d in zip(combo, divisor))
            if voxels > max_voxels:
                continue
            cost = (math.prod(len(a.starts) for a in combo) * voxels, math.prod(len(a.starts) for a in combo))
            if best_cost is None or cost < best_cost:
                best, best_cost = combo, cost
        # Nothing fits the budget: the smallest tiles (roi_size, rounded up to the divisor).
        return list(best) if best is not None else [axis_options[-1] for axis_options in options]

    def _grown_axis_options(self, size: int, roi: int, margin: int | None, divisor: int) -> list[AxisPlan]:
        """The tilings of one axis with 1, 2, ... tiles of at least ``roi`` (the last has the most tiles)."""
        whole_margin = margin if margin is not None else 0
        whole = AxisPlan(size, size, whole_margin, (0,), _axis_padding_mode(self.padding_mode, whole_margin, size),
                         whole_margin)
        if roi == -1 or roi >= size:
            return [whole]
        m = margin if margin is not None else auto_margin(roi, False)
        options, seen = [whole], {size}
        for count in range(2, self._count(size, roi) + 1):
            tile = max(roi, math.ceil(size / count))
            while self._count(size, tile) > count:
                tile += 1
            # The network pads its input to a multiple of the divisor: give it image context there instead.
            tile = max(tile, math.ceil((tile + 2 * m) / divisor) * divisor - 2 * m)
            if tile >= size or tile in seen:
                continue
            seen.add(tile)
            n = self._count(size, tile)
            starts = tuple(round(i * (size - tile) / (n - 1)) for i in range(n))
            options.append(AxisPlan(size, tile, m, starts, _axis_padding_mode(self.padding_mode, m, size), m))
        return options

    def _plan_valid(self, shape: tuple[int, ...], roi: tuple[int, ...], network: Any) -> list[AxisPlan]:
        dims = len(shape)
        margin = _network_margin(network, dims)
        if self.margin is not None and self._per_axis(self.margin, dims, "margin") != margin:
            raise ValueError(
                f"margin {list(self.margin)} was given, but a valid-convolution network fixes its own margin "
                f"{list(margin)}; leave margin unset"
            )
        sizes = _ValidSizes(network, [size if r == -1 else min(r, size) for r, size in zip(roi, shape)])
        axes = []
        for axis, size in enumerate(shape):
            whole = roi[axis] == -1 or roi[axis] >= size
            tile = None if whole else sizes.at_most(axis, roi[axis])
            if tile is None and not whole:
                tile = sizes.at_least(axis, roi[axis])
            if not whole:
                # Tiles must start on the pooling grid, i.e. at multiples of the spacing of valid sizes.
                period = sizes.period(axis, tile)
                if tile < period:
                    tile = sizes.at_least(axis, period)
                whole = tile >= size
            if whole:
                tile = sizes.at_least(axis, size)
                starts: tuple[int, ...] = (0,)
            else:
                step = max(period, self._step(tile) // period * period)
                count = math.ceil((size - tile) / step) + 1
                starts = tuple(i * step for i in range(count))
            m = margin[axis]
            pad_after = starts[-1] + tile + m - size
            axes.append(AxisPlan(size, tile, m, starts, _axis_padding_mode(self.padding_mode, m, size), pad_after))
        return axes

    # ------------------------------------------------------------------ inference

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Run overlap-tile inference of ``network`` on ``inputs``.

        Args:
            inputs: (N, C, *spatial) with 2 or 3 spatial axes (a MetaTensor keeps its metadata in the output).
            network: a module or callable returning one tensor (N, C_out, *spatial) in eval mode, or a sequence
                of them (an ensemble: mean of probabilities, needs ``activation``).
            args, kwargs: forwarded to the network on every call.

        Returns:
            (N, C_out, *spatial) on ``device``: the raw output, or probabilities when ``activation`` is set
            (see the module docstring).

        Raises:
            ValueError: if ``inputs`` is not (N, C, *spatial), averaging is requested without ``activation``, a
                TTA axis is out of range, the planning fails (see :meth:`plan`), or a tile's output does not have
                the expected spatial size.
            TypeError: if the network returns something other than one tensor (e.g. a tuple in training mode).
        """
        if inputs.dim() < 3:
            raise ValueError(f"inputs must be (N, C, *spatial), got shape {tuple(inputs.shape)}")
        networks = self._members(network)
        dims = inputs.dim() - 2
        if any(a >= dims for flip in self.tta_flips for a in flip):
            flips = [list(f) for f in self.tta_flips]
            raise ValueError(f"tta_flips {flips} name an axis beyond the {dims} spatial axes")
        plan = self._plan(tuple(inputs.shape[2:]), networks, inputs.shape[0])
        if plan.passes > 1 and self._activation is None:
            raise ValueError(
                "TTA flips and ensembles average probabilities: set activation ('softmax' or 'sigmoid', or a "
                "callable) so each prediction is turned into probabilities before averaging"
            )
        meta = MetaTensor([]).copy_meta_from(inputs, copy_attr=False) if isinstance(inputs, MetaTensor) else None
        x = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        device = torch.device(self.device) if self.device is not None else x.device
        sw_device = torch.device(self.sw_device) if self.sw_device is not None else x.device
        sigmas = self._per_axis_sigma(dims)
        tiles = [
            self._axis_tiles(axis, sigma, plan.valid_conv, x.device, device) for axis, sigma in zip(plan.axes, sigmas)
        ]

        entries = [(b, index) for b in range(x.shape[0]) for index in itertools.product(*(range(n) for n in plan.grid))]
        batches = range(0, len(entries), self.sw_batch_size)
        if self.progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="overlap-tile")
        output: torch.Tensor | None = None
        expected = plan.tile_size if plan.valid_conv else plan.input_size
        # One tile that is the whole volume, for every image in one call: no stitching, no copies.
        whole = (
            not plan.valid_conv
            and plan.num_tiles == 1
            and len(entries) <= self.sw_batch_size
            and all(a.margin == 0 and a.tile == a.size for a in plan.axes)
        )
        for first in batches:
            chunk = entries[first : first + self.sw_batch_size]
            if whole:
                batch = x.to(sw_device)
            elif len(chunk) == 1:
                batch = self._extract(x, *chunk[0], tiles).to(sw_device)
            else:
                batch = torch.cat([self._extract(x, b, index, tiles) for b, index in chunk]).to(sw_device)
            pred = self._predict(batch, networks, args, kwargs)
            if tuple(pred.shape[2:]) != expected or pred.shape[0] != len(chunk):
                raise ValueError(
                    f"a tile of input size {tuple(batch.shape[2:])} gave an output of size {tuple(pred.shape[2:])}, "
                    f"expected {expected} (batch {len(chunk)}); a network whose output is smaller than its input must "
                    "expose margin, output_size and input_size_for"
                )
            if whole:
                output = pred.to(device)
                break
            if output is None:
                # accumulate in the input's precision even when the network ran under autocast (bf16/fp16)
                dtype = torch.promote_types(pred.dtype, x.dtype) if x.is_floating_point() else pred.dtype
                output = torch.zeros((x.shape[0], pred.shape[1], *x.shape[2:]), dtype=dtype, device=device)
            for j, (b, index) in enumerate(chunk):
                self._write(output, b, pred[j], index, tiles)
        assert output is not None
        for axis, axis_tiles in enumerate(tiles):
            if axis_tiles.normaliser is not None:
                shape = [1] * output.dim()
                shape[2 + axis] = -1
                output.mul_(axis_tiles.normaliser.to(dtype=output.dtype).view(shape))
        if meta is not None:
            return convert_to_dst_type(output, meta, device=device)[0]
        return output

    def _per_axis_sigma(self, dims: int) -> tuple[float, ...]:
        if isinstance(self.sigma_scale, (int, float)):
            return (float(self.sigma_scale),) * dims
        sigmas = tuple(float(s) for s in self.sigma_scale)
        if len(sigmas) != dims:
            raise ValueError(f"sigma_scale must have one entry per spatial axis ({dims}) or be one float, got {sigmas}")
        return sigmas

    def _axis_tiles(
        self, axis: AxisPlan, sigma: float, valid_conv: bool, input_device: torch.device, device: torch.device
    ) -> _AxisTiles:
        """Input index ranges (on ``input_device``), output targets and blending weights (on ``device``) of the
        tiles along one axis."""
        size, tile, m = axis.size, axis.tile, axis.margin
        sources = []
        for start in axis.starts:
            lo, hi = start - m, start + tile + m
            if lo >= 0 and hi <= size:
                sources.append((lo, hi - lo, None, None))
                continue
            pos = torch.arange(lo, hi)
            outside = (pos < 0) | (pos >= size)
            index = _fold_index(pos, size, axis.padding_mode)
            first = int(index.min())
            zero = outside.to(input_device) if axis.padding_mode == "constant" else None
            sources.append((first, int(index.max()) - first + 1, (index - first).to(input_device), zero))

        offset = 0 if valid_conv else m  # where the tile's core begins in the network output
        ends = [min(s + tile, size) for s in axis.starts]
        targets, weights = [], []
        blend = self.blend_mode == "gaussian" and len(axis.starts) > 1
        if blend:
            curve = compute_importance_map((tile,), mode="gaussian", sigma_scale=sigma, device="cpu")
            normaliser = torch.zeros(size, dtype=torch.float64)
        for i, start in enumerate(axis.starts):
            if blend:
                lo, hi = max(start, 0), ends[i]
            else:
                # Constant blending: split each overlap at its middle, so every voxel comes from one tile.
                lo = 0 if i == 0 else (start + ends[i - 1]) // 2
                hi = size if i == len(axis.starts) - 1 else (axis.starts[i + 1] + ends[i]) // 2
            targets.append((lo, hi - lo, offset + lo - start))
            if blend:
                w = curve[lo - start : hi - start]
                normaliser[lo:hi] += w.double()
                weights.append(w.to(device))
            else:
                weights.append(None)
        return _AxisTiles(
            sources=tuple(sources),
            targets=tuple(targets),
            weights=tuple(weights),
            normaliser=(1.0 / normaliser).float().to(device) if blend else None,
        )

    @staticmethod
    def _extract(x: torch.Tensor, b: int, index: tuple[int, ...], tiles: list[_AxisTiles]) -> torch.Tensor:
        """Tile ``index`` of image ``b`` with its mirrored context, as (1, C, *network input)."""
        tile = x[b : b + 1]
        gathers = []
        for axis, (axis_tiles, i) in enumerate(zip(tiles, index)):
            lo, length, positions, zero = axis_tiles.sources[i]
            tile = tile.narrow(2 + axis, lo, length)  # narrow every axis first, so each gather copies one tile at most
            if positions is not None:
                gathers.append((axis, positions, zero))
        for axis, positions, zero in gathers:
            tile = tile.index_select(2 + axis, positions)
            if zero is not None:
                shape = [1] * tile.dim()
                shape[2 + axis] = -1
                tile = tile.masked_fill(zero.view(shape), 0)
        return tile

    def _predict(self, batch: torch.Tensor, networks: list[Any], args: tuple, kwargs: dict) -> torch.Tensor:
        """Mean over networks and flips of the (activated) predictions of one batch of tiles."""
        total: torch.Tensor | None = None
        for network in networks:
            for flip in ((),) + self.tta_flips:
                dims = [2 + a for a in flip]
                y = _single_tensor(network(batch.flip(dims) if dims else batch, *args, **kwargs))
                if self._activation is not None:
                    y = self._activation(y)
                if dims:
                    y = y.flip(dims)
                total = y if total is None else total + y
        assert total is not None
        passes = len(networks) * (1 + len(self.tta_flips))
        return total / passes if passes > 1 else total

    @staticmethod
    def _write(
        output: torch.Tensor, b: int, pred: torch.Tensor, index: tuple[int, ...], tiles: list[_AxisTiles]
    ) -> None:
        """Add (gaussian) or copy (constant) the core of one tile's prediction into ``output`` in place."""
        region = output[b]
        core = pred.to(output.device)
        weight: torch.Tensor | None = None
        for axis, (axis_tiles, i) in enumerate(zip(tiles, index)):
            lo, length, offset = axis_tiles.targets[i]
            region = region.narrow(1 + axis, lo, length)
            core = core.narrow(1 + axis, offset, length)
            w = axis_tiles.weights[i]
            if w is not None:
                shape = [1] * (len(tiles) + 1)
                shape[1 + axis] = -1
                w = w.to(dtype=output.dtype).view(shape)
                weight = w if weight is None else weight * w
        if weight is None:
            region.copy_(core)
        else:
            region.addcmul_(core, weight)
