"""Intensity normalization per channel, each modality with the method its dataset profile names."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, NormalizeIntensity, ScaleIntensityRange


def _percentile_scale(x: torch.Tensor, settings: Mapping[str, Any]) -> torch.Tensor:
    # MONAI's ScaleIntensityRangePercentiles takes no mask; maps are 0 outside the brain.
    mask = x != 0 if settings.get("mask", "nonzero") == "nonzero" else torch.ones_like(x, dtype=torch.bool)
    if not bool(mask.any()):
        return torch.zeros_like(x)
    values = x[mask].detach().cpu().numpy()
    low, high = np.percentile(values, [float(settings.get("lower", 0.5)), float(settings.get("upper", 99.5))])
    scale = float(high - low) if high > low else 1.0
    out = torch.where(mask, (x - float(low)) / scale, torch.zeros((), dtype=x.dtype, device=x.device))
    clip = settings.get("clip")
    if clip is not None:
        out = torch.where(mask, out.clamp(float(clip[0]), float(clip[1])), out)
    return out


def normalize_channel(x: torch.Tensor, settings: Mapping[str, Any]) -> torch.Tensor:
    """Normalize one channel according to its profile settings.

    Args:
        x: one channel, any spatial shape.
        settings: ``{"method": ...}`` with
            ``percentile`` (``lower``, ``upper`` percentiles inside ``mask`` = ``nonzero``|``all``,
            mapped to 0 and 1; 0 outside the mask; optional ``clip``): robust, unit-free, for
            perfusion maps whose units differ between sites;
            ``ct_window`` (``window`` = [low, high] HU, clipped then mapped to [0, 1]);
            ``zscore`` (mean 0, std 1 over the nonzero voxels; MONAI ``NormalizeIntensity``);
            ``range`` (``a_min``, ``a_max``, ``b_min``, ``b_max``, ``clip``; MONAI ``ScaleIntensityRange``);
            ``none``.

    Returns:
        The normalized channel (same shape, float).

    Raises:
        ValueError: unknown method.
    """
    method = settings.get("method", "none")
    if method == "none":
        return x
    if method == "percentile":
        return _percentile_scale(x, settings)
    if method == "ct_window":
        low, high = settings.get("window", (0.0, 80.0))
        return ScaleIntensityRange(a_min=float(low), a_max=float(high), b_min=0.0, b_max=1.0, clip=True)(x)
    if method == "zscore":
        return NormalizeIntensity(nonzero=settings.get("mask", "nonzero") == "nonzero")(x)
    if method == "range":
        return ScaleIntensityRange(
            a_min=float(settings["a_min"]), a_max=float(settings["a_max"]),
            b_min=float(settings.get("b_min", 0.0)), b_max=float(settings.get("b_max", 1.0)),
            clip=bool(settings.get("clip", False)),
        )(x)
    raise ValueError(f"unknown normalization method {method!r}")


class NormalizeModalitiesd(MapTransform):
    """Normalize each channel of a stacked image with its modality's method from the profile.

    Args:
        keys: keys of stacked images ``(C, *spatial)``.
        channels: the modality name of each channel, in order.
        settings: modality name -> ``{"normalization": {...}}`` (a profile's ``modalities``) or
            directly the normalization dict; see :func:`normalize_channel`.

    Raises (on call):
        ValueError: the image's channel count differs from ``len(channels)``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        channels: Sequence[str],
        settings: Mapping[str, Mapping[str, Any]],
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = list(channels)
        self.settings = {
            name: dict(s.get("normalization", s)) if isinstance(s, Mapping) else {"method": "none"}
            for name, s in settings.items()
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if image.shape[0] != len(self.channels):
                raise ValueError(f"{key}: {image.shape[0]} channels but {len(self.channels)} modalities {self.channels}")
            out = image.clone() if isinstance(image, torch.Tensor) else torch.as_tensor(image).clone()
            out = out.float()
            for c, name in enumerate(self.channels):
                out[c] = normalize_channel(out[c], self.settings.get(name, {"method": "none"}))
            d[key] = out
        return d
