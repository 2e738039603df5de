"""The writer transform at the end of the inference config: each case's mask on its reference grid."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from pipeline.errors import CaseError
from pipeline.io import atomic_path, write_mask_like
from pipeline.paths import path_under
from pipeline.postprocessing.lesion_mask import LesionPostprocessing, lesion_mask, voxel_volume_ml
from pipeline.predict.names import BUNDLE_FORMATS, format_extension, prediction_filename, probabilities_filename


def _first(value: Any) -> Any:
    """Collated or decollated values may still be one-element lists; take the element."""
    while isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return value



class SavePredictiond(MapTransform):
    """Write each case's prediction on its reference grid, named for the chosen format.

    Expects ``pred`` to be class probabilities ``(C, *spatial)`` already brought back to the native
    grid (MONAI ``Invertd``); the mask is the foreground probability (the sum over the non-background
    classes, or the one channel) above ``threshold``, with lesion components smaller than
    ``min_component_ml`` removed (:func:`pipeline.postprocessing.lesion_mask`; the defaults, 0.5 and 0,
    give the argmax), written as uint8 0/1 with the reference file's header (:func:`pipeline.io.write_mask_like`). With
    ``save_probabilities`` the foreground probability is also written as float16 to
    ``<name>_probabilities.npz`` (arrays ``probabilities`` and ``affine``; NIfTI has no float16).

    Args:
        keys: the prediction key.
        output_dir: the folder outputs go to.
        output_format: see :func:`prediction_filename`.
        team_name: ISLES 2018 team name.
        extension: file extension for the ``nifti`` and ``isles2022`` formats.
        case_folders: ``isles2024`` only: each case's output under a folder named by its case id (``predict`` sets it
            for a run of several cases; the challenge container's run has one, written at the top).

        reference_key, case_key, smir_key: record keys of the reference file, case id and SMIR id.
        save_probabilities: also write the probabilities.
        threshold, min_component_ml: the post-processing (``postprocessing.json`` of the model, see
            :mod:`pipeline.postprocessing`).

    Raises (on construction): ValueError: an unknown format or an invalid post-processing setting.
    Raises (on call):
        CaseError: a record lacks its reference file; ValueError: a prediction off the reference grid.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str | Path = "predictions",
        output_format: str = "nifti",
        team_name: str = "team",
        extension: str = ".nii.gz",
        reference_key: str = "reference",
        case_key: str = "case_id",
        smir_key: str = "smir_id",
        save_probabilities: bool = False,
        threshold: float = 0.5,
        min_component_ml: float = 0.0,
        case_folders: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if output_format not in BUNDLE_FORMATS:
            raise ValueError(f"unknown output format {output_format!r}; choose one of {', '.join(BUNDLE_FORMATS)}")
        extension = format_extension(output_format, extension)
        self.case_folders = bool(case_folders)

        self.output_dir = Path(output_dir)
        self.output_format = output_format
        self.team_name = team_name
        self.extension = extension
        self.reference_key = reference_key
        self.case_key = case_key
        self.smir_key = smir_key
        self.save_probabilities = save_probabilities
        self.postprocessing = LesionPostprocessing(float(threshold), float(min_component_ml))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        case_id = _first(d.get(self.case_key))
        if case_id is None or str(case_id) == "":
            raise CaseError(None, _first(d.get(self.reference_key)), f"the record has no {self.case_key!r}: outputs are named by it")
        case_id = str(case_id)
        reference = _first(d.get(self.reference_key))
        if not reference:
            raise CaseError(case_id, None, f"the record has no {self.reference_key!r} file to take the output grid from")
        name = prediction_filename(
            self.output_format, case_id, str(reference), _first(d.get(self.smir_key)), self.team_name, self.extension,
            self.case_folders,
        )
        for key in self.key_iterator(d):
            probabilities = torch.as_tensor(d[key]).detach().float().cpu()
            foreground = probabilities[1:].sum(0) if probabilities.shape[0] > 1 else probabilities[0]
            affine = np.asarray(getattr(d[key], "affine", np.eye(4)))
            mask = lesion_mask(foreground.numpy(), voxel_volume_ml(affine), self.postprocessing)
            path = write_mask_like(mask, reference, path_under(self.output_dir, name, case_id, "output name"))
            d[f"{key}_path"] = str(path)
            if self.save_probabilities:
                target = path_under(self.output_dir, probabilities_filename(name, self.extension), case_id,
                                    "output name")
                with atomic_path(target) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez_compressed(f, probabilities=foreground.numpy().astype(np.float16), affine=affine)
        return d
