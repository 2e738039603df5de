"""Spatial augmentation for thick slabs: an in-plane elastic deformation shared by every slice."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Rand2DElasticd, Randomizable


# MONAI's elastic transforms deform 2D images or whole 3D volumes; thick slabs need one in-plane field
# shared by every slice.
class RandInPlaneElasticd(Randomizable, MapTransform):
    """MONAI's ``Rand2DElasticd`` applied in-plane to 3D volumes: one random field for all slices.

    For thick slabs (a few slices of 5-12 mm) a 3D elastic field would mix slices that are far
    apart; here the slice axis is folded into the channels, one 2D deformation is drawn and applied
    to every slice of every key, and the axis is unfolded again.

    Args:
        keys: keys of ``(C, H, W, D)`` arrays (2D ``(C, H, W)`` arrays pass straight to MONAI).
        prob: probability of deforming a sample.
        spacing: distance in pixels between the control points of the field (MONAI ``spacing``).
        magnitude_range: range of the field's magnitude in pixels.
        mode: interpolation per key (e.g. ``("bilinear", "nearest")`` for image and label).
        padding_mode: how to fill outside the image.
        device: where the deformation grid is built (MONAI's ``device``; ``None``: the CPU, with the
            resampling on the data's device).
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.2,
        spacing: Sequence[float] | float = (30.0, 30.0),
        magnitude_range: Sequence[float] = (1.0, 3.0),
        mode: Sequence[str] | str = "bilinear",
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        spacing = (spacing, spacing) if isinstance(spacing, (int, float)) else tuple(spacing)
        self.elastic = Rand2DElasticd(
            keys, spacing=spacing, magnitude_range=tuple(magnitude_range), prob=prob, mode=mode,
            padding_mode=padding_mode, device=torch.device(device) if device is not None else None,
            allow_missing_keys=allow_missing_keys,
        )

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        """Seed the underlying MONAI transform; returns ``self``."""
        self.elastic.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Randomness is drawn by the wrapped ``Rand2DElasticd``."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys or d[keys[0]].ndim != 4:
            return dict(self.elastic(d))
        shapes = {k: d[k].shape for k in keys}
        folded = {k: _fold_slices(d[k]) for k in keys}
        out = self.elastic({**d, **folded})
        for k in keys:
            d[k] = _unfold_slices(out[k], shapes[k])
        return d


def _fold_slices(x: torch.Tensor) -> torch.Tensor:
    c, h, w, depth = x.shape
    return x.permute(0, 3, 1, 2).reshape(c * depth, h, w)


def _unfold_slices(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    c, h, w, depth = shape
    return x.reshape(c, depth, h, w).permute(0, 2, 3, 1).contiguous()
