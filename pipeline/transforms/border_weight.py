"""The U-Net (Ronneberger et al. 2015) border weight map of a label, for the loss, and its MONAI transform."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.transforms.utils import distance_transform_edt
from monai.utils import convert_to_dst_type
from scipy import ndimage


def _class_balance(foreground: np.ndarray, class_weights: str | Sequence[float] | None) -> np.ndarray:
    """w_c per voxel: ``"balanced"`` gives class k the weight N / (K * N_k) over the K classes present
    (mean 1 over the volume; 1 everywhere when only one class is present), a pair gives
    ``(background, foreground)`` weights, ``None`` gives 1."""
    if class_weights is None:
        return np.ones(foreground.shape, np.float32)
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(f"class_weights must be 'balanced', a (background, foreground) pair or None, got {class_weights!r}")
        n_fg = int(foreground.sum())
        n_bg = foreground.size - n_fg
        if n_fg == 0 or n_bg == 0:
            return np.ones(foreground.shape, np.float32)
        weights = (foreground.size / (2.0 * n_bg), foreground.size / (2.0 * n_fg))
    else:
        weights = tuple(float(w) for w in class_weights)
        if len(weights) != 2 or min(weights) < 0:
            raise ValueError(f"class_weights must be two non-negative numbers (background, foreground), got {class_weights!r}")
    return np.where(foreground, np.float32(weights[1]), np.float32(weights[0])).astype(np.float32)


def _separation_term(foreground: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` on the background of one 2D slice or 3D volume, in voxel units;
    0 where fewer than two components exist."""
    # MONAI's connected-component helpers keep only the largest component (and need scikit-image or
    # cuCIM); scipy labels them all. Full connectivity: 8 in 2D, 26 in 3D (the ISLES lesion count's).
    structure = ndimage.generate_binary_structure(foreground.ndim, foreground.ndim)
    components, count = ndimage.label(foreground, structure=structure)
    term = np.zeros(foreground.shape, np.float32)
    if count < 2:
        return term
    d1 = np.full(foreground.shape, np.inf)
    d2 = np.full(foreground.shape, np.inf)
    for k in range(1, count + 1):  # running two smallest distances: memory does not grow with the count
        dk = np.asarray(distance_transform_edt((components != k)[None]))[0]
        d2 = np.minimum(d2, np.maximum(d1, dk))
        d1 = np.minimum(d1, dk)
    term[:] = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
    term[foreground] = 0.0
    return term


def border_weight_map(
    label: np.ndarray | torch.Tensor,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: str | Sequence[float] | None = "balanced",
    in_plane: bool = True,
    slice_axis: int = -1,
) -> np.ndarray:
    """The U-Net (Ronneberger et al. 2015) loss weight map of a binary label.

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``, where d1 and d2 are the distances (in
    voxels, the paper's pixels) from x to the nearest and the second-nearest connected lesion component,
    and w_c balances the class frequencies. The separation term is added on background voxels only (the
    gaps between lesions, as in the paper's Fig. 3), and only where at least two components exist.

    Args:
        label: ``(1, H, W[, D])`` array or tensor; voxels > 0 are lesion.
        w0: the separation weight (paper: 10).
        sigma: its width in voxels (paper: about 5 pixels).
        class_weights: w_c: ``"balanced"`` (class k gets N / (2 N_k) over the whole label, so its mean
            is 1; 1 everywhere for an empty or full label), ``(background, foreground)``, or ``None`` (1).
        in_plane: compute components and distances per 2D slice along ``slice_axis`` (the paper's 2D
            definition; for thick slabs, whose slices are 5-12 mm apart); ``False``: in 3D (for
            near-isotropic grids: the distances are in voxels on every axis).
        slice_axis: the spatial axis that indexes the slices when ``in_plane``.

    Returns:
        float32 array of the label's shape.

    Raises:
        ValueError: not a one-channel 2D/3D label, ``sigma <= 0``, ``w0 < 0`` or bad class weights.
    """
    array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if array.ndim not in (3, 4) or array.shape[0] != 1:
        raise ValueError(f"border_weight_map takes a one-channel (1, H, W[, D]) label, got shape {array.shape}")
    if sigma <= 0 or w0 < 0:
        raise ValueError(f"need sigma > 0 and w0 >= 0, got sigma={sigma}, w0={w0}")
    foreground = array[0] > 0
    weight = _class_balance(foreground, class_weights)
    if w0 > 0:
        if in_plane and foreground.ndim == 3:
            slices = np.moveaxis(foreground, slice_axis, 0)
            term = np.stack([_separation_term(s, w0, sigma) for s in slices])
            weight += np.moveaxis(term, 0, slice_axis)
        else:
            weight += _separation_term(foreground, w0, sigma)
    return weight[None]


class BorderWeightd(MapTransform):
    """Add the U-Net border weight map of a label under ``weight_key`` (see :func:`border_weight_map`).

    It belongs to the deterministic (cached) part of a training chain, after the label is on its final
    grid; the random crops and spatial augmentations then carry ``weight`` with ``image`` and
    ``label`` (``nearest``, like the label, so that w_c stays aligned with the deformed label), and the
    loss (:class:`pipeline.losses.BorderWeightedDiceCELoss`) weights its cross-entropy with it.

    Args:
        keys: the label key (one key).
        weight_key: where the map goes; ``(1, *spatial)`` float32, of the label's type (meta copied).
        w0, sigma, class_weights, in_plane, slice_axis: see :func:`border_weight_map`.

    Raises (on call):
        ValueError: see :func:`border_weight_map`.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        weight_key: str = "weight",
        w0: float = 10.0,
        sigma: float = 5.0,
        class_weights: str | Sequence[float] | None = "balanced",
        in_plane: bool = True,
        slice_axis: int = -1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if sigma <= 0 or w0 < 0:
            raise ValueError(f"need sigma > 0 and w0 >= 0, got sigma={sigma}, w0={w0}")
        self.weight_key = weight_key
        self.w0, self.sigma = float(w0), float(sigma)
        self.class_weights = class_weights
        self.in_plane, self.slice_axis = bool(in_plane), int(slice_axis)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            weight = border_weight_map(label, self.w0, self.sigma, self.class_weights, self.in_plane, self.slice_axis)
            d[self.weight_key] = convert_to_dst_type(weight, label, dtype=torch.float32)[0]
        return d
