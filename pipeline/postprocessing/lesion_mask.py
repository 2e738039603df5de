"""The lesion mask of one case's probabilities: a foreground threshold, then small components removed."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

__all__ = ["DEFAULT_POSTPROCESSING", "LesionPostprocessing", "lesion_mask"]


@dataclass(frozen=True)
class LesionPostprocessing:
    """How probabilities become the lesion mask.

    Attributes:
        threshold: a voxel is lesion where its foreground probability is above this (0.5: the argmax of two classes).
        min_component_ml: connected lesion components (26-connected) smaller than this volume (mL) are removed
            (0: none).
    """

    threshold: float = 0.5
    min_component_ml: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"the lesion threshold must lie strictly between 0 and 1, got {self.threshold}")
        if not float(self.min_component_ml) >= 0.0:
            raise ValueError(f"the smallest lesion component must be >= 0 mL, got {self.min_component_ml}")

    def as_dict(self) -> dict[str, float]:
        """``{"threshold": ..., "min_component_ml": ...}``."""
        return {k: float(v) for k, v in asdict(self).items()}


DEFAULT_POSTPROCESSING = LesionPostprocessing()


def voxel_volume_ml(affine: np.ndarray) -> float:
    """The volume (mL) of one voxel of a grid with this 4x4 affine.

    Raises:
        ValueError: a singular affine.
    """
    volume = abs(float(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0
    if not volume > 0:
        raise ValueError("the grid's affine is singular: no voxel volume")
    return volume


def lesion_mask(foreground: np.ndarray, voxel_ml: float, setting: LesionPostprocessing = DEFAULT_POSTPROCESSING) -> np.ndarray:
    """The lesion mask of a foreground probability map.

    Args:
        foreground: the lesion probability per voxel, 2D or 3D.
        voxel_ml: the volume of one voxel (mL), for ``setting.min_component_ml``.
        setting: the threshold and the smallest component kept.

    Returns:
        uint8 0/1 mask of ``foreground``'s shape.
    """
    mask = np.asarray(foreground, dtype=np.float32) > float(setting.threshold)
    if setting.min_component_ml > 0 and mask.any():
        # scipy's labelling: MONAI's RemoveSmallObjects needs scikit-image, which is not a dependency
        labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        small = sizes * float(voxel_ml) < float(setting.min_component_ml)
        small[0] = True
        mask = ~small[labels]
    return mask.astype(np.uint8)
