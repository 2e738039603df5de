"""Slab geometry and patient plans: the voxel grid of one slab and how many slabs each patient gets.

Slab geometries (slices, thickness) follow the real ISLES 2018 training release; thin slabs may be
acquired twice per patient (slabs A and B), as on scanners with a narrow detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "IN_PLANE",
    "IN_PLANE_SPACING_MM",
    "MAX_TWO_SLAB_EXTENT_MM",
    "SLAB_HISTOGRAM",
    "TWO_SLAB_PROBABILITY",
    "PatientPlan",
    "SlabGeometry",
    "plan_patients",
]

# (slices, thickness mm, number of the real training slabs with that geometry)
SLAB_HISTOGRAM = ((2, 12.0, 46), (16, 10.0, 13), (4, 6.0, 11), (8, 5.0, 9), (4, 5.0, 8), (2, 10.0, 5), (22, 4.0, 2))
IN_PLANE = 256
IN_PLANE_SPACING_MM = (0.80, 1.04)
# Only slabs this thin are acquired twice per patient (scanners with a narrow detector).
MAX_TWO_SLAB_EXTENT_MM = 40.0
# Chosen so that about one third of the patients have two slabs while the per-slab geometry
# frequencies stay those of SLAB_HISTOGRAM.
TWO_SLAB_PROBABILITY = 0.42


@dataclass(frozen=True)
class SlabGeometry:
    """The voxel grid of one slab in scanner coordinates (mm).

    Attributes:
        n_slices: number of slices.
        thickness_mm: slice thickness (= slice spacing).
        spacing_mm: in-plane spacing, the same along x and y.
        z_centre_mm: scanner z of the slab's centre.
    """

    n_slices: int
    thickness_mm: float
    spacing_mm: float
    z_centre_mm: float = 0.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """The array shape ``(256, 256, n_slices)``."""
        return (IN_PLANE, IN_PLANE, self.n_slices)

    @property
    def extent_mm(self) -> float:
        """Coverage along z: slices times thickness."""
        return self.n_slices * self.thickness_mm

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in mL."""
        return self.spacing_mm * self.spacing_mm * self.thickness_mm / 1000.0

    @property
    def sub_samples(self) -> int:
        """Sub-samples averaged across each slice's thickness (partial volume)."""
        return max(1, round(self.thickness_mm / 3.0))

    @property
    def affine(self) -> np.ndarray:
        """``diag(-s, -s, thickness)`` with a translation that centres the field of view."""
        s = self.spacing_mm
        centre = (IN_PLANE - 1) / 2.0
        affine = np.diag([-s, -s, self.thickness_mm, 1.0])
        affine[:3, 3] = [s * centre, s * centre, self.z_centre_mm - self.thickness_mm * (self.n_slices - 1) / 2.0]
        return affine

    def sample_points(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """Scanner coordinates of every sub-sample.

        Args:
            rows, cols: restrict to these in-plane index ranges (first and second array axes).

        Returns:
            float32 array ``(sub_samples, n_rows, n_cols, n_slices, 3)``; sub-samples are spread
            evenly across each slice's thickness.
        """
        affine = self.affine
        n_sub = self.sub_samples
        idx = np.arange(IN_PLANE, dtype=np.float64)
        xs = (affine[0, 0] * idx + affine[0, 3])[rows]
        ys = (affine[1, 1] * idx + affine[1, 3])[cols]
        offsets = self.thickness_mm * ((np.arange(n_sub) + 0.5) / n_sub - 0.5)
        zs = affine[2, 3] + self.thickness_mm * np.arange(self.n_slices)
        points = np.empty((n_sub, xs.size, ys.size, self.n_slices, 3), dtype=np.float32)
        points[..., 0] = xs[None, :, None, None]
        points[..., 1] = ys[None, None, :, None]
        points[..., 2] = (offsets[:, None] + zs[None, :])[:, None, None, :]
        return points


@dataclass(frozen=True)
class PatientPlan:
    """How one patient is scanned: one slab geometry, acquired once (slab A) or twice (A and B).

    Attributes:
        n_slices, thickness_mm, spacing_mm: the slab geometry shared by the patient's slabs.
        n_slabs: 1 or 2.
    """

    n_slices: int
    thickness_mm: float
    spacing_mm: float
    n_slabs: int


def plan_patients(n_slabs: int, rng: np.random.Generator, two_slabs: bool = True) -> list[PatientPlan]:
    """Draw patients and their slab geometry until ``n_slabs`` slabs are planned.

    Slab geometries follow :data:`SLAB_HISTOGRAM` per slab; about one third of the patients with a
    thin slab (at most 40 mm) get a second slab with the same geometry. Cheap: draws no image.

    Args:
        n_slabs: total number of slabs (cases) wanted, >= 0.
        rng: the random generator to draw from.
        two_slabs: whether a patient may have a second slab (ISLES 2018); False: one volume per patient
            (ISLES 2024). The draws are the same either way, so a seed plans the same geometries.

    Returns:
        The patient plans, in order; their ``n_slabs`` add up to ``n_slabs``.

    Raises:
        ValueError: ``n_slabs`` is negative.
    """
    if n_slabs < 0:
        raise ValueError(f"n_slabs must be >= 0, got {n_slabs}")
    geometries = [(n, t) for n, t, _ in SLAB_HISTOGRAM]
    eligible = np.array([n * t <= MAX_TWO_SLAB_EXTENT_MM for n, t in geometries])
    # Per-patient weights: a twice-acquired geometry yields two slabs, so it is drawn less often.
    weights = np.array([w for _, _, w in SLAB_HISTOGRAM], dtype=float) / (1.0 + TWO_SLAB_PROBABILITY * eligible)
    weights /= weights.sum()
    plans: list[PatientPlan] = []
    remaining = n_slabs
    while remaining > 0:
        k = int(rng.choice(len(geometries), p=weights))
        spacing = float(np.round(rng.uniform(*IN_PLANE_SPACING_MM), 4))
        two = bool(eligible[k]) and rng.random() < TWO_SLAB_PROBABILITY and remaining >= 2 and two_slabs
        n, t = geometries[k]
        plans.append(PatientPlan(n_slices=n, thickness_mm=t, spacing_mm=spacing, n_slabs=2 if two else 1))
        remaining -= plans[-1].n_slabs
    return plans
