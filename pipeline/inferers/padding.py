"""Mirror padding of the spatial axes: folding extended positions back, the per-axis mode fallback, mirror_pad."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["PADDING_MODES", "mirror_pad"]

PADDING_MODES = ("reflect", "symmetric", "replicate", "constant")


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
