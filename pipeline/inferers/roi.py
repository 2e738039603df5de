"""Window and tile sizes: checking a ``roi_size`` and the sliding window of a network trained on patches."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["checked_roi_size", "sliding_window_roi"]


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
