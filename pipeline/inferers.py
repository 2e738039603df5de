"""Overlap-tile inference (Ronneberger et al. 2015) as a MONAI ``Inferer``, with flip TTA and checkpoint ensembles.

The volume is extended by the network's context margin by mirroring, split into tiles, and every output
tile is taken from the centre of its input tile, so neighbouring tiles join without seams:

- valid-convolution networks (anything exposing ``margin``, ``output_size`` and ``input_size_for``, such as
  :class:`pipeline.networks.ValidUNet`) give exactly the result of the network applied to the mirror-padded
  whole volume: the margin is the network's, and tiles start on its pooling grid;
- same-padded networks (UNet, UNet++) see ``margin`` extra voxels of context on each side of every tile
  (mirrored at the volume border); those voxels of the tile's output, where the network saw its own zero
  padding instead of the neighbouring image, are discarded before stitching. MONAI's ``SlidingWindowInferer``
  instead down-weights tile borders by averaging tiles that overlap by half, at about twice the cost.

Tile size: by default every tile is ``roi_size`` (plus its margins). With ``max_tile_voxels`` set, same-padded
networks that say which input sizes they compute without waste (a ``size_divisor``, as every network of
:mod:`pipeline.networks` does) get tiles grown beyond ``roi_size`` while one tile's network input stays within
it: axis by axis, the number of tiles that feeds the fewest voxels through the network, every tile's input
rounded up to the divisor (an ISLES slab of 256x256xN becomes one whole-volume pass). Growth is opt-in because
a network with instance normalisation normalises over its whole input: its output depends on the tile's size
and content, and a model trained on small, lesion-centred patches can predict much worse on larger tiles (one
demo-trained UNet++: mean test Dice 0.26 on whole slabs, 0.37 on 176x176 tiles, 0.54 with MONAI's 128x128
windows at overlap 0.5; another: 0.60, 0.58, 0.57). The bundles therefore infer with MONAI's
``SlidingWindowInferer`` at the training patch; this inferer is for networks whose output does not depend on
the tile (valid convolutions, batch normalisation in eval mode), where it is exact and cheaper.

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
from functools import reduce
from typing import Any

import torch
from monai.data.meta_tensor import MetaTensor
from monai.data.utils import compute_importance_map
from monai.inferers import Inferer, SlidingWindowInferer
from monai.utils import convert_to_dst_type, fall_back_tuple
from torch import nn

from pipeline.precision import AutocastInferer, amp_dtype

__all__ = [
    "ACTIVATIONS",
    "AxisPlan",
    "BLEND_MODES",
    "DEFAULT_MAX_TILE_VOXELS",
    "MeanEnsemble",
    "OverlapTileInferer",
    "WindowBudgetInferer",
    "PADDING_MODES",
    "TilePlan",
    "auto_margin",
    "checked_roi_size",
    "is_valid_conv",
    "mirror_pad",
    "segmentation_inferer",
    "size_divisor_of",
    "tile_independent",
]

PADDING_MODES = ("reflect", "symmetric", "replicate", "constant")
BLEND_MODES = ("constant", "gaussian")
ACTIVATIONS = ("softmax", "sigmoid")
# Context added on each side of a tile of a same-padded network, as a fraction of the tile size (see auto_margin).
AUTO_MARGIN_FRACTION = 3.0 / 16.0
# How far to look for a valid tile size of a valid-convolution network before giving up.
_SIZE_SEARCH_LIMIT = 4096
# Default bound on one grown tile's network input, in voxels (2**21: 256x256x32, or 128x128x128). The memory a
# network needs grows with it times the network's width: at 2**21 voxels, float32 without gradients, a peak of
# about 2.6 GB for the bundles' default UNet++ (features 16..256), 1.7 GB for the demo's (8..128), on a CPU.
DEFAULT_MAX_TILE_VOXELS = 2**21


def is_valid_conv(network: Any) -> bool:
    """Return True if ``network`` has the valid-convolution geometry: ``margin``, ``output_size``, ``input_size_for``.

    Args:
        network: a module or any callable.

    Returns:
        Whether the overlap-tile inferer treats ``network`` as a network whose output is smaller than its input.
    """
    return (
        hasattr(network, "margin")
        and callable(getattr(network, "output_size", None))
        and callable(getattr(network, "input_size_for", None))
    )


def _network_margin(network: Any, spatial_dims: int) -> tuple[int, ...]:
    margin = network.margin
    margin = (int(margin),) * spatial_dims if isinstance(margin, int) else tuple(int(m) for m in margin)
    if len(margin) != spatial_dims:
        raise ValueError(f"the network's margin {margin} does not have one entry per spatial axis ({spatial_dims})")
    return margin


def size_divisor_of(network: Any, spatial_dims: int) -> tuple[int, ...] | None:
    """The per-axis input multiple a same-padded network computes without padding, or None if it does not say.

    Args:
        network: a module or callable, or a sequence of them (an ensemble: the least common multiple of theirs).
        spatial_dims: the number of spatial axes.

    Returns:
        The network's ``size_divisor`` (an int or one per axis, as the networks of :mod:`pipeline.networks`
        expose it) expanded to ``spatial_dims`` ints, or None when the network (or any member) has none, or it
        does not have one entry per axis. Only networks with a divisor get grown tiles.
    """
    members = list(network) if isinstance(network, (list, tuple, nn.ModuleList)) else [network]
    result: tuple[int, ...] | None = None
    for member in members:
        divisor = getattr(member, "size_divisor", None)
        if divisor is None:
            return None
        divisor = (int(divisor),) * spatial_dims if isinstance(divisor, int) else tuple(int(d) for d in divisor)
        if len(divisor) != spatial_dims or min(divisor) < 1:
            return None
        result = divisor if result is None else tuple(math.lcm(a, b) for a, b in zip(result, divisor))
    return result


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

    Valid-convolution members (see :func:`is_valid_conv`) must share their geometry (``margin``); the ensemble then
    exposes ``margin``, ``output_size`` and ``input_size_for`` of the first member, so
    :class:`OverlapTileInferer` tiles it like a single valid-convolution network. Same-padded members that all
    expose a ``size_divisor`` give the ensemble the least common multiple of theirs, so it gets grown tiles too.

    Raises:
        ValueError: if ``networks`` is empty, mixes valid-convolution and same-padded members, or the
            valid-convolution members have different margins; or on an unknown activation name.
    """

    def __init__(self, networks: Sequence[nn.Module], activation: str | Callable | None = "softmax") -> None:
        super().__init__()
        networks = list(networks)
        if not networks:
            raise ValueError("MeanEnsemble needs at least one network")
        self.networks = nn.ModuleList(networks)
        self.activation = activation
        self._activation = _resolve_activation(activation)
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
        """Return the mean over the members of ``activation(member(x, *args, **kwargs))``.

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
        return total / len(self.networks)


def _fold_index(pos: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Map positions on the extended axis to source indices in [0, size); mirroring repeats periodically."""
    if mode in ("reflect", "symmetric") and size > 1:
        if mode == "reflect":
            period = 2 * (size - 1)
            pos = torch.remainder(pos, period)
            return torch.where(pos >= size, period - pos, pos)
        period = 2 * size
        pos = torch.remainder(pos, period)
        return torch.where(pos >= size, period - 1 - pos, pos)
    return pos.clamp(0, size - 1)  # replicate (and a 1-voxel axis); constant positions are zeroed by the caller


def _axis_padding_mode(mode: str, pad: int, size: int) -> str:
    """The padding mode one axis actually uses: reflect needs pad <= size - 1, symmetric needs pad <= size;
    where the axis is too short (a 2-slice slab), reflect falls back to symmetric, then to replicate."""
    if mode == "reflect" and pad > size - 1:
        mode = "symmetric"
    if mode == "symmetric" and pad > size:
        mode = "replicate"
    return mode


# Own padding instead of F.pad: its reflect mode needs pad < size and it has no symmetric mode or fallback.
def mirror_pad(x: torch.Tensor, pad: Sequence[int | Sequence[int]] | int, mode: str = "reflect") -> torch.Tensor:
    """Pad the spatial axes of ``x`` (N, C, *spatial) the way :class:`OverlapTileInferer` extends a volume.

    This materialises the padded volume; the inferer itself pads tile by tile. Useful as the whole-volume
    reference of a tiled result.

    Args:
        x: a batch, channels first.
        pad: one int for every side of every axis, or per spatial axis an int or a (before, after) pair.
        mode: ``"reflect"`` (mirror without repeating the edge voxel, as in the U-Net paper), ``"symmetric"``
            (mirror repeating it), ``"replicate"`` or ``"constant"`` (zeros). On an axis too short for its larger
            pad, ``reflect`` falls back to ``symmetric`` (pad <= size) and then to ``replicate``; ``symmetric`` to
            ``replicate`` (mirroring a 2-slice slab more than once would alternate its two slices).

    Returns:
        The padded tensor (a new tensor; ``x`` itself when nothing is padded).

    Raises:
        ValueError: on an unknown mode, a negative pad, or a pad that does not have one entry per spatial axis.
    """
    if mode not in PADDING_MODES:
        raise ValueError(f"padding mode must be one of {PADDING_MODES}, got {mode!r}")
    spatial_dims = x.dim() - 2
    pads = _expand_pairs(pad, spatial_dims)
    for axis, (before, after) in enumerate(pads):
        if before == 0 and after == 0:
            continue
        size = x.shape[2 + axis]
        axis_mode = _axis_padding_mode(mode, max(before, after), size)
        pos = torch.arange(-before, size + after)
        x = x.index_select(2 + axis, _fold_index(pos, size, axis_mode).to(x.device))
        if axis_mode == "constant":
            x.narrow(2 + axis, 0, before).zero_()
            x.narrow(2 + axis, before + size, after).zero_()
    return x


def _expand_pairs(pad: Sequence[int | Sequence[int]] | int, spatial_dims: int) -> list[tuple[int, int]]:
    entries = [pad] * spatial_dims if isinstance(pad, int) else list(pad)
    if len(entries) != spatial_dims:
        raise ValueError(f"pad must have one entry per spatial axis ({spatial_dims}), got {pad}")
    pairs = [(int(p), int(p)) if isinstance(p, int) else tuple(int(v) for v in p) for p in entries]
    if any(len(p) != 2 or min(p) < 0 for p in pairs):
        raise ValueError(f"pad entries must be non-negative ints or (before, after) pairs, got {pad}")
    return pairs  # type: ignore[return-value]


def checked_roi_size(roi_size: Sequence[int] | int) -> tuple[int, ...]:
    """``roi_size`` as a tuple of ints, each positive or ``-1`` (the whole axis).

    Raises:
        ValueError: an entry of 0 or below -1.
    """
    roi = (int(roi_size),) if isinstance(roi_size, int) else tuple(int(r) for r in roi_size)
    if any(r == 0 or r < -1 for r in roi):
        raise ValueError(f"roi_size entries must be positive or -1 (whole axis), got {roi_size}")
    return roi


def sliding_window_roi(patch_size: Sequence[int], strides: Sequence[Sequence[int] | int]) -> list[int]:
    """The inference window of a network trained on ``patch_size`` patches.

    An instance-normalised network normalises over its whole input, so it is applied to windows of the patch it
    was trained on. An axis the network never downsamples (every stride 1 on it, as on the slice axis of a
    thick 2-slice slab) is taken whole (``-1``): there the patch is only a few slices and the network sees
    each slice with the same local context whatever the window.

    Args:
        patch_size: the training patch, one size per spatial axis.
        strides: the network's per-level strides (an int, or one value per axis, per level).

    Returns:
        ``roi_size`` for MONAI's ``SlidingWindowInferer``: the patch, with ``-1`` on never-downsampled axes.

    Raises:
        ValueError: a level's strides do not have one value per patch axis, or a patch size is not positive.
    """
    patch = [int(p) for p in patch_size]
    if any(p < 1 for p in patch):
        raise ValueError(f"patch_size must be positive, got {list(patch_size)}")
    pooled = [False] * len(patch)
    for level in strides:
        per_axis = [int(level)] * len(patch) if isinstance(level, int) else [int(s) for s in level]
        if len(per_axis) != len(patch):
            raise ValueError(f"strides {list(level)} do not match the patch's {len(patch)} axes")
        pooled = [was or s > 1 for was, s in zip(pooled, per_axis)]
    return [p if was else -1 for p, was in zip(patch, pooled)]


# Windows per network call of WindowBudgetInferer: as many as keep one batch within this many voxels (2**18: eight
# 128x128x2 windows of a thin slab, four of 128x128x4, two of 128x128x8, thicker ones alone). Measured on 2 CPU
# cores in bf16: 1.2x, 1.1x and 1.1x faster than one window per call; larger batches were slower for 8 slices.
DEFAULT_MAX_BATCH_VOXELS = 2**18


# MONAI's SlidingWindowInferer batches a fixed number of windows, whatever their size.
class WindowBudgetInferer(SlidingWindowInferer):
    """MONAI's ``SlidingWindowInferer`` that picks ``sw_batch_size`` for each input: as many windows per network
    call as keep the batch within ``max_batch_voxels`` (at least one). The windows, their weights and the
    result are MONAI's; only the batching changes, which on a CPU makes thin windows (the 128x128x2 windows of
    2-slice slabs) about 1.2x faster.

    Args:
        roi_size: the window, as for ``SlidingWindowInferer`` (``-1``: the whole axis).
        max_batch_voxels: the most voxels of input windows in one network call.
        kwargs: any other ``SlidingWindowInferer`` argument except ``sw_batch_size`` (``overlap``, ``mode``, ...).

    Raises:
        ValueError: a non-positive ``max_batch_voxels``.
    """

    def __init__(self, roi_size: Sequence[int] | int, max_batch_voxels: int = DEFAULT_MAX_BATCH_VOXELS,
                 **kwargs: Any) -> None:
        if int(max_batch_voxels) < 1:
            raise ValueError(f"max_batch_voxels must be positive, got {max_batch_voxels}")
        super().__init__(roi_size=roi_size, sw_batch_size=1, **kwargs)
        self.max_batch_voxels = int(max_batch_voxels)

    def windows_per_call(self, spatial_shape: Sequence[int]) -> int:
        """Windows per network call for an input of ``spatial_shape`` (MONAI clips the window to the input)."""
        window = [min(r, int(size)) for r, size in zip(fall_back_tuple(self.roi_size, spatial_shape), spatial_shape)]
        return max(1, self.max_batch_voxels // math.prod(window))

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any):
        """MONAI's sliding-window inference of ``network`` on ``inputs`` (N, C, *spatial), windows batched."""
        self.sw_batch_size = self.windows_per_call(inputs.shape[2:])
        return super().__call__(inputs, network, *args, **kwargs)


# Normalisations whose statistics are taken over the input at hand: with them, a network's output depends on the tile.
_TILE_STATISTICS = (nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def tile_independent(network: Any) -> bool:
    """Whether a network computes the same value at a voxel whatever tile the voxel is inferred in (in eval mode,
    up to its receptive field): no normalisation takes statistics over its input. Batch norm (running statistics)
    and networks without normalisation are; instance norm without running statistics, group and layer norm are not.

    Args:
        network: a module (or an ensemble of modules); anything else counts as tile-dependent.

    Returns:
        True when every normalisation of ``network`` uses fixed statistics in eval mode.
    """
    members = list(network) if isinstance(network, (list, tuple)) else [network]
    if not members or not all(isinstance(member, nn.Module) for member in members):
        return False
    for member in members:
        for module in member.modules():
            if isinstance(module, nn.modules.instancenorm._InstanceNorm) and not module.track_running_stats:
                return False
            if isinstance(module, _TILE_STATISTICS):
                return False
    return True


def segmentation_inferer(
    network: Any,
    roi_size: Sequence[int],
    device: str | torch.device = "cpu",
    amp: bool = False,
    overlap: float = 0.5,
    sw_batch_size: int | None = None,
    max_tile_voxels: int | None = DEFAULT_MAX_TILE_VOXELS,
) -> Inferer:
    """The inferer the bundles validate and predict with, chosen by what the network's output depends on.

    - A tile-independent network (:func:`tile_independent`, e.g. ``norm="batch"``) with a ``size_divisor`` gets
      :class:`OverlapTileInferer` with tiles grown from ``roi_size`` (a 256x256xN slab in one pass: the result of
      MONAI's windows at a fraction of the cost, since only the tile borders differ).
    - Any other network (instance norm, as in nnU-Net) gets MONAI's ``SlidingWindowInferer`` (as
      :class:`WindowBudgetInferer`, which batches thin windows) over ``roi_size`` windows (the bundles give the training patch, :func:`sliding_window_roi`), ``overlap`` 0.5 and Gaussian
      blending: its normalisation sees the window, and windows like the training patches keep its output as
      trained.
    - ``amp`` runs either under autocast (:class:`pipeline.precision.AutocastInferer`: bf16 on CPUs and recent GPUs,
      fp16 on older GPUs), outputs in float32.

    Args:
        network: the network that will run (it is inspected, not called).
        roi_size: the window (the smallest tile when tiles grow); ``-1`` takes an axis whole.
        device: where the network runs (decides the autocast device type and dtype).
        amp: run under autocast.
        overlap: MONAI's window overlap.
        sw_batch_size: windows or tiles per network call; None: as many windows as fit
            :data:`DEFAULT_MAX_BATCH_VOXELS` (:class:`WindowBudgetInferer`), one grown tile.
        max_tile_voxels: the bound on one grown tile's network input (see :class:`OverlapTileInferer`).

    Returns:
        An :class:`pipeline.precision.AutocastInferer` around the chosen inferer (autocast off unless ``amp``).

    Raises:
        ValueError: on a ``roi_size`` entry of 0 or below -1.
    """
    roi = list(checked_roi_size(roi_size))
    if tile_independent(network) and size_divisor_of(network, len(roi)) is not None:
        inner: Inferer = OverlapTileInferer(roi_size=roi, sw_batch_size=sw_batch_size or 1, max_tile_voxels=max_tile_voxels)
    elif sw_batch_size is None:
        inner = WindowBudgetInferer(roi_size=roi, overlap=overlap, mode="gaussian")
    else:
        inner = SlidingWindowInferer(roi_size=roi, sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian")
    device = torch.device(device)
    return AutocastInferer(inner, device.type, amp_dtype(device), enabled=bool(amp))


def auto_margin(tile_size: int, whole_axis: bool) -> int:
    """Default context margin of a same-padded network on one axis.

    Args:
        tile_size: the tile's output size on that axis.
        whole_axis: whether one tile spans the whole axis.

    Returns:
        0 when one tile spans the whole axis (the network sees that axis exactly as in training, e.g. the two
        slices of a thick slab), else ``ceil(3 * tile_size / 16)``: 24 for a 128-voxel tile, whose network input
        is then 176 (a multiple of UNet++'s 16). On a 256x256 slab this is 4 tiles of 176x176 against the 9 of
        128x128 of ``SlidingWindowInferer(overlap=0.5, mode="gaussian")``, for the same segmentation: on ISLES-like
        slabs the two agree in Dice, while margins of 8 or 16 voxels lose a little at tile borders.
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
            None (default) keeps every tile at ``roi_size`` (see the module docstring for why). When even the smallest tiles (``roi_size``, their input rounded
            up to the divisor) exceed it, those are used.

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
