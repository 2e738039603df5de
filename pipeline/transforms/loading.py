"""Loading a case: its modalities stacked as channels on the reference file's grid, and its 0/1 lesion mask.

Loading leaves the image on the native grid of the reference modality with no recorded operation, so MONAI's
``Invertd`` brings a prediction back onto that grid exactly. The header checks that come first (the files share
one grid, store numbers) are in :mod:`pipeline.io.geometry` and :mod:`pipeline.io.dtypes`.
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
from monai.transforms import LoadImage, MapTransform, ResampleToMatch

from pipeline.checks import binary_label, constant_channel_note
from pipeline.data.validation import check_channel_files
from pipeline.errors import CaseError, GeometryError, root_cause
from pipeline.io.dtypes import check_image_dtype
from pipeline.io.geometry import check_case_geometry
from pipeline.io.readers import image_readers


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
