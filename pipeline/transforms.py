"""Our MONAI MapTransforms: stack a case's modalities as channels with geometry checks, normalize them,
and the U-Net border weight map for the loss.

A typical chain (see :func:`preprocessing_transforms`)::

    LoadModalitiesd("image", channels=profile.channels, label_key="label")  # checks and stacks
    LoadLabeld("label", image_key="image")                                   # 0/1, on the image's grid
    Spacingd(["image", "label"], pixdim, mode=["bilinear", "nearest"])       # optional, invertible
    Orientationd(["image", "label"], "RAS")                                  # optional, invertible
    NormalizeModalitiesd("image", channels=..., settings=profile.modalities)

Loading leaves the image on the native grid of the reference modality with no recorded operation,
so MONAI's ``Invertd`` brings a prediction back onto that grid exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms.utils import distance_transform_edt
from monai.utils import convert_to_dst_type
from scipy import ndimage
from monai.transforms import (
    Rand2DElasticd,
    Randomizable,
    LoadImage,
    MapTransform,
    NormalizeIntensity,
    Orientationd,
    ResampleToMatch,
    ScaleIntensityRange,
    Spacingd,
)

from pipeline.checks import binary_label, constant_channel_note
from pipeline.data.profiles import DatasetProfile
from pipeline.data.validation import check_channel_files
from pipeline.errors import CaseError, GeometryError, root_cause
from pipeline.io import Geometry, check_image_dtype, format_mm, image_readers, read_geometry


# ---------------------------------------------------------------------------------------------
# Geometry checks (headers only)
# ---------------------------------------------------------------------------------------------
def _is_4d(geometry: Geometry) -> bool:
    return len(geometry.shape) > 3 and int(np.prod(geometry.shape[3:])) > 1


def grid_difference(a: Geometry, b: Geometry, tolerance_mm: float) -> str | None:
    """Describe how two grids differ, or return ``None`` when they match within ``tolerance_mm``.

    Shapes must be equal; spacings, directions (as spacing-scaled affine columns) and origins must
    agree to ``tolerance_mm``. When either header has the pixdim/affine quirk its direction and
    origin are not trustworthy, so only shape and spacing are compared.
    """
    if a.spatial_shape != b.spatial_shape:
        return f"shape {a.spatial_shape} versus {b.spatial_shape}"
    if not np.allclose(a.spacing, b.spacing, atol=tolerance_mm, rtol=0):
        return f"spacing {format_mm(a.spacing)} mm versus {format_mm(b.spacing)} mm"
    if a.spacing_note is not None or b.spacing_note is not None:
        return None
    if not np.allclose(a.affine[:3, :3], b.affine[:3, :3], atol=tolerance_mm, rtol=0):
        return "orientation (affine directions) differs"
    if not np.allclose(a.affine[:3, 3], b.affine[:3, 3], atol=tolerance_mm, rtol=0):
        return f"origin {format_mm(a.affine[:3, 3])} mm versus {format_mm(b.affine[:3, 3])} mm"
    return None


def check_case_geometry(
    case_id: str | None,
    channel_paths: Sequence[tuple[str, str]],
    label_path: str | None = None,
    reference_path: str | None = None,
    resample_to_reference: Sequence[str] = (),
    tolerance_mm: float = 0.01,
) -> Geometry:
    """Check, from headers only, that a case's files can be stacked and labelled on one grid.

    Args:
        case_id: named in errors.
        channel_paths: ``(modality name, path)`` per channel, in channel order.
        label_path: the label file, which must lie on the reference grid.
        reference_path: the file whose grid is the case's grid; defaults to the first channel.
        resample_to_reference: modality names allowed to lie on another grid (they get resampled).
        tolerance_mm: tolerance on spacing, direction and origin.

    Returns:
        The reference :class:`Geometry` (its ``spacing_note`` says when the header quirk was met).

    Raises:
        CaseError: a file is missing, unreadable, or 4D (a time series offered as a channel).
        GeometryError: a channel or the label is not on the reference grid (names both files and
            the difference).
    """
    if not channel_paths:
        raise CaseError(case_id, None, "no channel files given")
    geometries: dict[str, Geometry] = {}

    def geometry_of(path: str) -> Geometry:
        if path not in geometries:
            check_image_dtype(path, case_id)
            try:
                geometries[path] = read_geometry(path)
            except (FileNotFoundError, ValueError) as err:
                raise CaseError(case_id, path, str(err)) from err
        return geometries[path]

    reference_path = reference_path or channel_paths[0][1]
    reference = geometry_of(reference_path)
    for name, path in list(channel_paths) + ([("label", label_path)] if label_path else []):
        geometry = geometry_of(path)
        if _is_4d(geometry):
            raise CaseError(
                case_id,
                path,
                f"{name} is a 4D file (shape {geometry.shape}) and cannot be one channel; 4D source data "
                "such as CT_4DPWI is left out of the channels (choose 3D maps with --channels)",
            )
        if name in resample_to_reference:
            continue
        difference = grid_difference(geometry, reference, tolerance_mm)
        if difference is not None:
            raise GeometryError(
                case_id,
                path,
                f"{name} is not on the grid of the reference file {reference_path!r}: {difference}",
            )
    return reference


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def load_one_volume(loader: LoadImage, case_id: str | None, path: str, name: str) -> MetaTensor:
    """Read one file with ``loader`` (channel first) and check that it holds a single 3D volume.

    Args:
        loader: MONAI ``LoadImage`` with ``ensure_channel_first``.
        case_id, path: named in errors.
        name: what the file is (``CBF``, ``the label``), named in errors.

    Returns:
        The volume, ``(1, *spatial)``.

    Raises:
        CaseError: the file cannot be read, or holds several volumes.
    """
    try:
        image = loader(path)
    except Exception as err:  # noqa: BLE001 - readers raise many types; the message names case and file
        raise CaseError(case_id, path, f"cannot read {name}: {str(root_cause(err)).strip()}") from err
    if image.shape[0] != 1:
        raise CaseError(case_id, path, f"{name} holds {image.shape[0]} volumes; one 3D volume is expected")
    return image


class LoadModalitiesd(MapTransform):
    """Load a case's per-modality files and stack them as channels on the reference modality's grid.

    MONAI's ``LoadImaged`` stacks a list of files only when they share one grid and names no file
    when they do not; this transform checks the grids first (:func:`check_case_geometry`), refuses
    4D files, replaces non-finite values, resamples the modalities the profile allows onto the
    reference grid (MONAI ``ResampleToMatch``), and stacks.

    Non-finite values (NaN, +-Inf) are replaced by 0, the value the maps take outside the brain,
    with a ``UserWarning`` naming the case, the file and the count.

    Args:
        keys: the key holding the list of channel paths (one key).
        channels: modality names of the channels, in the order of the path list (for messages and
            for ``resample_to_reference``); defaults to ``channel0, channel1, ...``.
        label_key: key of the label path, whose grid is checked against the reference (optional).
        reference_key: key of the reference file's path; defaults to the first channel.
        case_key: key of the case id, named in errors.
        resample_to_reference: modality names that may lie on another grid and are resampled
            (bilinear) onto the reference grid.
        tolerance_mm: grid comparison tolerance.
        dtype: dtype of the stacked image.
        modalities_key: key of the record's ``modality -> file`` map; when the record has one, every
            channel's file must be the one the map gives for that channel's modality.
        strict: fail a case with an empty or constant channel instead of warning.

    The stacked image always carries the reference file's geometry (affine and meta), whichever
    channel is listed first and whichever file has an inconsistent header: the reference file is read
    even when it is not a channel. An empty or constant channel is warned about (``UserWarning`` naming
    the case, the file and the channel; an error with ``strict``).

    Returns (on call): the dictionary with ``keys`` replaced by a ``MetaTensor`` of shape
    ``(C, *spatial)`` whose meta (affine, file name) is the reference file's.

    Raises:
        CaseError, GeometryError: see :func:`check_case_geometry`; also a record whose channel list
            contradicts its modality map (naming both files), and with ``strict`` an empty or
            constant channel.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        channels: Sequence[str] | None = None,
        label_key: str | None = "label",
        reference_key: str | None = "reference",
        case_key: str = "case_id",
        resample_to_reference: Sequence[str] = (),
        tolerance_mm: float = 0.01,
        dtype: Any = np.float32,
        modalities_key: str | None = "modalities",
        strict: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = list(channels) if channels is not None else None
        self.modalities_key = modalities_key
        self.strict = bool(strict)
        self.label_key = label_key
        self.reference_key = reference_key
        self.case_key = case_key
        self.resample_to_reference = list(resample_to_reference)
        self.tolerance_mm = tolerance_mm
        self.loader = LoadImage(reader=image_readers(), image_only=True, ensure_channel_first=True, dtype=dtype)
        self.resampler = ResampleToMatch(mode="bilinear", padding_mode="zeros")

    def _load_channel(self, case_id: str | None, name: str, path: str) -> MetaTensor:
        # the data type was checked with the grids (check_case_geometry) before any channel is read
        image = load_one_volume(self.loader, case_id, path, name)
        finite = torch.isfinite(image)
        if not bool(finite.all()):
            count = int((~finite).sum())
            warnings.warn(
                f"case {case_id!r}, file {path!r}: {count} non-finite value(s) in {name} replaced by 0",
                UserWarning,
                stacklevel=2,
            )
            image = torch.where(finite, image, torch.zeros((), dtype=image.dtype))
        return image

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        case_id = d.get(self.case_key)
        for key in self.key_iterator(d):
            paths = [str(p) for p in ([d[key]] if isinstance(d[key], (str, Path)) else d[key])]
            names = self.channels or [f"channel{i}" for i in range(len(paths))]
            if len(names) != len(paths):
                raise CaseError(case_id, None, f"{len(paths)} channel files for {len(names)} channels {names}")
            reference_path = d.get(self.reference_key) if self.reference_key else None
            label_path = d.get(self.label_key) if self.label_key else None
            check_case_geometry(
                case_id,
                list(zip(names, paths)),
                label_path=str(label_path) if isinstance(label_path, (str, Path)) else None,
                reference_path=str(reference_path) if reference_path else None,
                resample_to_reference=self.resample_to_reference,
                tolerance_mm=self.tolerance_mm,
            )
            if self.modalities_key and self.channels is not None:
                check_channel_files(case_id, names, paths, d.get(self.modalities_key))
            images = [self._load_channel(case_id, n, p) for n, p in zip(names, paths)]
            for name, path, image in zip(names, paths, images):
                note = constant_channel_note(image, case_id, path, name)
                if note is not None:
                    if self.strict:
                        raise CaseError(case_id, path, note.split(": ", 1)[1] + " (refused: strict checks are on)")
                    warnings.warn(note, UserWarning, stacklevel=2)
            reference_path = str(reference_path or paths[0])
            # The reference's own header gives the case its geometry, never the first channel's.
            reference = images[paths.index(reference_path)] if reference_path in paths else self._load_channel(
                case_id, "the reference modality", reference_path)
            for i, name in enumerate(names):
                if name in self.resample_to_reference and (
                    images[i].shape[1:] != reference.shape[1:] or not torch.allclose(images[i].affine, reference.affine)
                ):
                    resampled = self.resampler(images[i], img_dst=reference)
                    images[i] = MetaTensor(resampled.as_tensor(), affine=reference.affine)
            stacked = torch.cat([im.as_tensor() for im in images], dim=0)
            d[key] = MetaTensor(stacked, meta=dict(reference.meta))
        return d


class LoadLabeld(MapTransform):
    """Load a case's lesion mask onto the stacked image's grid, checked to hold only 0 and 1.

    The mask takes the geometry (affine and meta) of the stacked image of :class:`LoadModalitiesd`, which is the
    reference file's: :func:`check_case_geometry` has already checked that the label lies on that grid, so
    an inconsistent label header cannot turn the mask against the image (e.g. mirror it under ``Orientationd``).

    Args:
        keys: the label key (its value is the mask's path).
        image_key: the key of the already stacked image whose geometry the mask takes.
        case_key: the key of the case id, named in errors.
        label_values: optional mapping of file values to 0/1 (a profile's ``label_values``, e.g. ``{255: 1}``).

    Returns (on call): the dictionary with ``keys`` replaced by a float32 ``MetaTensor`` ``(1, *spatial)`` of 0 and 1.

    Raises:
        CaseError: the file cannot be read, is not one 3D volume on the image's grid, or holds values other
            than 0 and 1 after the mapping (the message lists the values found).
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        image_key: str = "image",
        case_key: str = "case_id",
        label_values: Mapping | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.case_key = case_key
        self.label_values = dict(label_values or {})
        self.loader = LoadImage(reader=image_readers(), image_only=True, ensure_channel_first=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        case_id = d.get(self.case_key)
        image = d.get(self.image_key)
        for key in self.key_iterator(d):
            path = str(d[key])
            check_image_dtype(path, case_id)  # also where no LoadModalitiesd checked the label's file
            label = load_one_volume(self.loader, case_id, path, "the label")
            if isinstance(image, torch.Tensor) and tuple(label.shape[1:]) != tuple(image.shape[1:]):
                raise GeometryError(case_id, path, f"the label's shape {tuple(label.shape[1:])} is not the image's "
                                                   f"{tuple(image.shape[1:])}")
            mask = torch.as_tensor(binary_label(label, case_id, path, self.label_values), dtype=torch.float32)
            meta = dict(image.meta) if isinstance(image, MetaTensor) else dict(label.meta)
            meta["filename_or_obj"] = path
            d[key] = MetaTensor(mask, meta=meta)
        return d


# ---------------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# U-Net border weight map
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Chains
# ---------------------------------------------------------------------------------------------
def preprocessing_transforms(
    profile: DatasetProfile,
    image_key: str = "image",
    label_key: str | None = "label",
    orientation: str | None = "RAS",
    target_spacing: Sequence[float] | None = None,
) -> list:
    """The loading and preprocessing chain of a profile, as a list of MONAI transforms.

    Args:
        profile: channels, normalization, reference modality and resampling rules.
        image_key: key of the channel path list in the data dictionaries.
        label_key: key of the label path, ``None`` for inference without labels.
        orientation: axis codes to reorient to (``Orientationd``), ``None`` to keep the native axes.
        target_spacing: resample to this spacing in mm (``Spacingd``, before reorienting, so the axes are the
            files' voxel axes, the plans' order; a value <= 0 keeps that axis), ``None`` to keep it.

    Returns:
        A list of transforms; every spatial step is invertible with ``Invertd``.
    """
    keys = [image_key] + ([label_key] if label_key else [])
    chain: list = [
        LoadModalitiesd(
            image_key,
            channels=profile.channels,
            label_key=label_key,
            resample_to_reference=profile.resample_to_reference,
            tolerance_mm=profile.geometry_tolerance_mm,
        )
    ]
    if label_key:
        chain.append(LoadLabeld(label_key, image_key=image_key, label_values=getattr(profile, "label_values", None)))
    if target_spacing is not None:
        modes = ["bilinear"] + (["nearest"] if label_key else [])
        chain.append(Spacingd(keys, pixdim=tuple(target_spacing), mode=modes))
    if orientation:
        chain.append(Orientationd(keys, axcodes=orientation))
    chain.append(NormalizeModalitiesd(image_key, channels=profile.channels, settings=profile.modalities))
    return chain
