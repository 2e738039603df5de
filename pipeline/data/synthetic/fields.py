"""Smooth random fields and small numeric helpers the phantom is built from.

A :class:`GridField` is a scalar field on a regular grid in head coordinates (mm), sampled with
trilinear interpolation; :func:`smooth_noise` draws the smooth random values such fields hold, and
:class:`VoxelSampler` reads slowly varying fields once per voxel centre instead of once per
sub-sample. The remaining functions are the soft step, clamped logarithm, ramp and rotation used by
the anatomy, lesion and perfusion models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["GridField", "VoxelSampler", "box_grid", "ramp", "rotation_matrix", "safe_log", "smooth_noise", "soft_step"]


@dataclass
class GridField:
    """A scalar field on a regular grid in head coordinates, sampled with trilinear interpolation."""

    values: np.ndarray
    origin: np.ndarray
    step: float

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Values at head-coordinate points ``(3, M)``."""
        if points.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)
        coords = (points - self.origin[:, None]) * np.float32(1.0 / self.step)
        return ndimage.map_coordinates(self.values, coords, order=1, mode="nearest", prefilter=False)


class VoxelSampler:
    """Reads slowly varying fields once per voxel centre for a set of sub-samples.

    Args:
        centres: head coordinates ``(3, V)`` of the voxel centres.
        voxel: the voxel index of each sub-sample of the set.
    """

    def __init__(self, centres: np.ndarray, voxel: np.ndarray):
        self.centres = centres
        self.voxel = voxel
        present = np.zeros(centres.shape[1], bool)
        present[voxel] = True
        self.unique = np.nonzero(present)[0]
        self._unique_centres = centres[:, self.unique]

    def __call__(self, field: GridField) -> np.ndarray:
        """The field's value for every sub-sample of the set."""
        per_voxel = np.zeros(self.centres.shape[1], np.float32)
        per_voxel[self.unique] = field(self._unique_centres)
        return per_voxel[self.voxel]

    def subset(self, index: np.ndarray) -> "VoxelSampler":
        """A sampler for the sub-samples ``index`` of this set."""
        return VoxelSampler(self.centres, self.voxel[index])


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation (float32)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox, mode="wrap")
    return noise / np.float32(noise.std() + 1e-12)


def box_grid(lo: np.ndarray, hi: np.ndarray, step: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Origin and shape of a grid with spacing ``step`` covering the box ``lo``..``hi``."""
    shape = tuple(int(math.ceil((h - l) / step)) + 1 for l, h in zip(lo, hi))
    return np.asarray(lo, dtype=np.float32), shape  # type: ignore[return-value]


def soft_step(x: np.ndarray, width: float) -> np.ndarray:
    """Logistic step of ``x`` with transition ``width``: 0 well below zero, 1/2 at zero, 1 well above."""
    return 1.0 / (1.0 + np.exp(-np.clip(x / width, -30, 30)))


def safe_log(x: np.ndarray) -> np.ndarray:
    """Natural logarithm of ``x`` clamped at 1e-30, so that zeros give a large negative value, not -inf."""
    return np.log(np.maximum(x, np.float32(1e-30)))


def ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear ramp of ``x``: 0 at or below ``lo``, 1 at or above ``hi``."""
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The 3x3 rotation ``Rz(yaw) @ Rx(pitch) @ Ry(roll)`` (angles in radians)."""
    cz, sz = math.cos(yaw), math.sin(yaw)
    cx, sx = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(roll), math.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry
