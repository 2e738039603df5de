"""Our MONAI MapTransforms: stack a case's modalities as channels with geometry checks, normalize them,
the U-Net border weight map for the loss, and an in-plane elastic deformation for thick slabs.

Modules: :mod:`~pipeline.transforms.loading` (``LoadModalitiesd``, ``LoadLabeld``),
:mod:`~pipeline.transforms.normalization` (``NormalizeModalitiesd``), :mod:`~pipeline.transforms.border_weight`
(``BorderWeightd``) and :mod:`~pipeline.transforms.augmentation` (``RandInPlaneElasticd``). The chains they make up
are the bundles' own (``loading``, ``resampling``, ``normalization``, ... in ``configs/train.json`` and
``configs/inference.json``). The header-geometry checks live in
:mod:`pipeline.io.geometry` and are re-exported here so that older imports work.
"""

from __future__ import annotations

from pipeline.io.geometry import _is_4d, check_case_geometry, grid_difference  # noqa: F401 - _is_4d: older imports
from pipeline.transforms.augmentation import RandInPlaneElasticd
from pipeline.transforms.border_weight import BorderWeightd, border_weight_map
from pipeline.transforms.loading import LoadLabeld, LoadModalitiesd, load_one_volume
from pipeline.transforms.normalization import NormalizeModalitiesd, normalize_channel

__all__ = [
    "BorderWeightd",
    "LoadLabeld",
    "LoadModalitiesd",
    "NormalizeModalitiesd",
    "RandInPlaneElasticd",
    "border_weight_map",
    "check_case_geometry",
    "grid_difference",
    "load_one_volume",
    "normalize_channel",
]
