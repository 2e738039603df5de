"""Synthetic ISLES 2018 dataset: a procedural CT-perfusion head phantom and the dataset writer.

Every patient is a random head (pose, ellipsoidal skull, scalp, CSF, folded cortex, white matter,
deep grey nuclei, ventricles, a few bright vessels) with one ischemic lesion in one vascular
territory. The head is a set of analytic shapes and smooth random fields defined in head
coordinates (mm), evaluated at the physical sampling points of each slab, so that two slabs of one
patient see the same head and lesion. Thick slices are partial-volume averages of several
sub-samples across the slice thickness.

The lesion is a propensity field L (a few irregular blobs in one territory). The label thresholds a
tissue-fate field, L times smooth log-normal noise; the perfusion maps see the deficit S, the same
blobs displaced a little times other, independent noise. The maps therefore only noisily measure
the label, and the clinical threshold rule reaches a Dice of about 0.3-0.6, not 0.9, as on the real
data. Files follow the ISLES 2018 release layout, names and dtypes.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from pipeline.baseline import threshold_rule
from pipeline.io import atomic_write_json, atomic_write_text, save_nifti_atomic
from pipeline.metrics import dice_score

__all__ = [
    "AIR",
    "BRAIN_TISSUES",
    "CSF",
    "DEEP_GREY",
    "GREY_MATTER",
    "MODALITIES",
    "MODALITY_DTYPES",
    "SCALP",
    "SKULL",
    "SLAB_HISTOGRAM",
    "TISSUE_NAMES",
    "WHITE_MATTER",
    "PatientPlan",
    "Phantom",
    "RenderedSlab",
    "SlabGeometry",
    "SynthSummary",
    "make_phantom",
    "plan_patients",
    "render_patient",
    "write_synthetic_dataset",
]

# Tissue classes of the phantom.
AIR, SCALP, SKULL, CSF, GREY_MATTER, WHITE_MATTER, DEEP_GREY = range(7)
TISSUE_NAMES = {
    AIR: "air",
    SCALP: "scalp",
    SKULL: "skull",
    CSF: "csf",
    GREY_MATTER: "grey_matter",
    WHITE_MATTER: "white_matter",
    DEEP_GREY: "deep_grey",
}
BRAIN_TISSUES = (GREY_MATTER, WHITE_MATTER, DEEP_GREY)

MODALITIES = ("CT", "CT_4DPWI", "CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax", "OT")
MODALITY_DTYPES = {
    "CT": np.int32,
    "CT_4DPWI": np.int16,
    "CT_CBF": np.uint16,
    "CT_CBV": np.uint16,
    "CT_MTT": np.float64,
    "CT_Tmax": np.float64,
    "OT": np.uint8,
}

# (slices, thickness mm, number of the 94 real training slabs with that geometry)
SLAB_HISTOGRAM = ((2, 12.0, 46), (16, 10.0, 13), (4, 6.0, 11), (8, 5.0, 9), (4, 5.0, 8), (2, 10.0, 5), (22, 4.0, 2))
IN_PLANE = 256
IN_PLANE_SPACING_MM = (0.80, 1.04)
# Only slabs this thin are acquired twice per patient (scanners with a narrow detector).
MAX_TWO_SLAB_EXTENT_MM = 40.0
# Chosen so that about one third of the patients have two slabs while the per-slab geometry
# frequencies stay those of SLAB_HISTOGRAM.
TWO_SLAB_PROBABILITY = 0.42

PWI_FRAME_INTERVAL_S = 4.0
PWI_FRAMES = 6
# (CBF factor, CBV factor) of the three simulated sites: CBF/CBV units differ between sites.
SITE_SCALES = ((1.0, 10.0), (2.5, 25.0), (10.0, 100.0))
LESION_ML_RANGE = (1.0, 100.0)
LESION_ML_MEDIAN = 15.0
LESION_ML_LOG_SIGMA = 1.6  # IQR about 5-45 mL around the 15 mL median
TERRITORIES = ("MCA", "ACA", "PCA")
TERRITORY_WEIGHTS = (0.7, 0.1, 0.2)
# Lowest fate threshold (the propensity peaks near 1): a volume target the lesion cannot reach
# above it is not met, rather than spreading the label over the whole territory.
MIN_FATE_THRESHOLD = 0.12
# Width (in territory radii) of the soft edge that confines a lesion to its vascular territory.
TERRITORY_EDGE_SOFTNESS = 0.2
# Standard deviations of the independent smooth log-noises by which the label (fate) and the
# perfusion deficit see the shared lesion propensity, and of the smooth modulation that makes the
# lesion border irregular.
FATE_NOISE = 0.8
PERFUSION_DEFICIT_NOISE = 0.9
LESION_IRREGULARITY = 0.35
LESION_NOISE_SIGMA_MM = 8.0  # smoothing of the fate and perfusion noises
# Where the CT-perfusion core starts, in log units above the fate threshold: a positive offset
# makes the maps' core smaller than the final infarct (infarct growth after the scan).
CORE_OFFSET_RANGE = (-0.15, 0.25)
# Displacement (in blob radii) and log-scale spread of the perfusion deficit's blobs relative to
# the infarct's.
PERFUSION_BLOB_SHIFT = 0.3
PERFUSION_BLOB_LOG_SCALE = 0.15

# Brain-normalised territory boxes (u lateral toward the lesion side, v anterior, w superior) where
# blob centres are drawn, and the soft ellipsoid (centre, semi-axes) the lesion is confined to.
_TERRITORY_BOXES = {
    "MCA": ((0.42, 0.72), (-0.35, 0.35), (-0.10, 0.45)),
    "MCA_deep": ((0.18, 0.38), (-0.05, 0.22), (-0.05, 0.22)),
    "ACA": ((0.08, 0.25), (0.10, 0.55), (0.30, 0.62)),
    "PCA": ((0.15, 0.45), (-0.82, -0.55), (-0.20, 0.25)),
}
_TERRITORY_ENVELOPES = {
    "MCA": ((0.60, 0.00, 0.15), (0.50, 0.62, 0.62)),
    "MCA_deep": ((0.32, 0.08, 0.08), (0.30, 0.35, 0.35)),
    "ACA": ((0.15, 0.30, 0.45), (0.28, 0.55, 0.50)),
    "PCA": ((0.30, -0.70, 0.02), (0.38, 0.40, 0.45)),
}


# ----------------------------------------------------------------------------------------------
# Geometry and patient plans
# ----------------------------------------------------------------------------------------------


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


def plan_patients(n_slabs: int, rng: np.random.Generator) -> list[PatientPlan]:
    """Draw patients and their slab geometry until ``n_slabs`` slabs are planned.

    Slab geometries follow :data:`SLAB_HISTOGRAM` per slab; about one third of the patients with a
    thin slab (at most 40 mm) get a second slab with the same geometry. Cheap: draws no image.

    Args:
        n_slabs: total number of slabs (cases) wanted, >= 0.
        rng: the random generator to draw from.

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
        two = bool(eligible[k]) and rng.random() < TWO_SLAB_PROBABILITY and remaining >= 2
        n, t = geometries[k]
        plans.append(PatientPlan(n_slices=n, thickness_mm=t, spacing_mm=spacing, n_slabs=2 if two else 1))
        remaining -= plans[-1].n_slabs
    return plans


# ----------------------------------------------------------------------------------------------
# Smooth random fields
# ----------------------------------------------------------------------------------------------


@dataclass
class _GridField:
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


class _VoxelSampler:
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

    def __call__(self, field: _GridField) -> np.ndarray:
        """The field's value for every sub-sample of the set."""
        per_voxel = np.zeros(self.centres.shape[1], np.float32)
        per_voxel[self.unique] = field(self._unique_centres)
        return per_voxel[self.voxel]

    def subset(self, index: np.ndarray) -> "_VoxelSampler":
        """A sampler for the sub-samples ``index`` of this set."""
        return _VoxelSampler(self.centres, self.voxel[index])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation (float32)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox, mode="wrap")
    return noise / np.float32(noise.std() + 1e-12)


def _grid(lo: np.ndarray, hi: np.ndarray, step: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Origin and shape of a grid with spacing ``step`` covering the box ``lo``..``hi``."""
    shape = tuple(int(math.ceil((h - l) / step)) + 1 for l, h in zip(lo, hi))
    return np.asarray(lo, dtype=np.float32), shape  # type: ignore[return-value]


def _soft_step(x: np.ndarray, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x / width, -30, 30)))


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, np.float32(1e-30)))


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cz, sz = math.cos(yaw), math.sin(yaw)
    cx, sx = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(roll), math.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


# ----------------------------------------------------------------------------------------------
# The phantom
# ----------------------------------------------------------------------------------------------


@dataclass
class RenderedSlab:
    """One slab of a phantom: the tissue map, noise-free maps, the label and the written images.

    Attributes:
        geometry: the slab grid.
        tissue: uint8 tissue class per voxel (majority over the sub-samples), see :data:`TISSUE_NAMES`.
        purity: fraction of the voxel's sub-samples that are of its majority class.
        brain_mask: voxels with at least half their sub-samples inside the skull.
        baseline: healthy noise-free maps in physiological units (``cbf`` mL/100g/min, ``cbv``
            mL/100g, ``mtt`` s, ``tmax`` s, ``ct`` HU): no lesion, no vessels.
        clean: noise-free maps with the perfusion deficit and vessels, same units.
        vessel: vessel fraction per voxel (0..1).
        label: uint8 0/1 lesion (tissue fate).
        fate_threshold: the threshold applied to the fate field.
        images: the arrays as written, by modality name (``CT``... ``OT``), in the release dtypes
            (CBF/CBV multiplied by the site scales).
    """

    geometry: SlabGeometry
    tissue: np.ndarray
    purity: np.ndarray
    brain_mask: np.ndarray
    baseline: dict[str, np.ndarray]
    clean: dict[str, np.ndarray]
    vessel: np.ndarray
    label: np.ndarray
    fate_threshold: float
    images: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def lesion_ml(self) -> float:
        """Labelled volume in mL."""
        return float(self.label.sum()) * self.geometry.voxel_ml


class Phantom:
    """One random patient: head anatomy, pose, tissue values, vessels and an ischemic lesion.

    Build it with :func:`make_phantom`. All shapes live in head coordinates (mm, origin at the
    head's centre, x left-right, y posterior-anterior, z inferior-superior); the pose maps them into
    scanner coordinates.
    """

    def __init__(self, rng: np.random.Generator):
        self._draw_pose(rng)
        self._draw_anatomy(rng)
        self._draw_tissue_values(rng)
        self._draw_vessels(rng)
        self._draw_lesion(rng)
        site = int(rng.integers(len(SITE_SCALES)))
        self.cbf_scale, self.cbv_scale = SITE_SCALES[site]

    # -- drawing ---------------------------------------------------------------------------------

    def _draw_pose(self, rng: np.random.Generator) -> None:
        self.rotation = _rotation(
            math.radians(rng.uniform(-12, 12)), math.radians(rng.uniform(-4, 4)), math.radians(rng.uniform(-3, 3))
        )
        self.translation = np.array([rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(-8, 8)])

    def _draw_anatomy(self, rng: np.random.Generator) -> None:
        self.head_axes = np.array([rng.uniform(72, 80), rng.uniform(88, 97), rng.uniform(72, 80)])
        self.scalp_mm = rng.uniform(4.0, 6.5)
        self.skull_mm = rng.uniform(5.0, 7.5)
        self.csf_mm = rng.uniform(1.5, 3.0)
        self.cortex_mm = rng.uniform(2.5, 3.2)
        self.sulcus_depth_mm = rng.uniform(10.0, 16.0)
        self.sulcus_half_width_mm = rng.uniform(0.5, 0.9)
        inner = self.head_axes - self.scalp_mm - self.skull_mm
        self.brain_axes = inner
        self.brain_scale = inner / np.array([68.0, 82.0, 62.0])

        lo = -self.head_axes - 8.0
        self._coarse_origin, coarse_shape = _grid(lo, -lo, 4.0)
        names = ("outer", "scalp", "skull", "skull_hu", "csf", "sulcus_depth", "deep", "tmax")
        self._coarse = {n: _GridField(_smooth_noise(rng, coarse_shape, 1.8), self._coarse_origin, 4.0) for n in names}

        blo = -inner - 4.0
        self._fine_origin, fine_shape = _grid(blo, -blo, 2.0)
        self._fine_shape = fine_shape
        fold = _smooth_noise(rng, fine_shape, 1.5)
        self._fold = _GridField(fold, self._fine_origin, 2.0)
        grad = np.gradient(fold, 2.0)
        # Mean gradient norm turns |fold| into an approximate distance (mm) to its zero set (sulci).
        self._fold_gradient = float(np.mean(np.sqrt(sum(g * g for g in grad))))

        s = self.brain_scale
        self.ventricle_axes = np.array([rng.uniform(3.0, 6.0), rng.uniform(24, 30), rng.uniform(5, 8)]) * s
        self.ventricle_centre = np.array([self.ventricle_axes[0] + rng.uniform(1.0, 2.0), -4.0 * s[1], 15.0 * s[2]])
        # (centre for the right side, semi-axes) of putamen/pallidum, caudate head and thalamus.
        self.nuclei = [
            (np.array([22.0, 3.0, 1.0]) * s, np.array([7.0, 13.0, 9.0]) * s),
            (np.array([13.0, 14.0, 10.0]) * s, np.array([5.0, 9.0, 8.0]) * s),
            (np.array([10.0, -15.0, 4.0]) * s, np.array([8.5, 12.0, 9.0]) * s),
        ]

    def _draw_tissue_values(self, rng: np.random.Generator) -> None:
        gm_cbf = rng.uniform(50, 60)
        gm_mtt = rng.uniform(max(4.0, 240.0 / gm_cbf), min(6.0, 300.0 / gm_cbf))
        wm_cbf = rng.uniform(20, 25)
        wm_mtt = rng.uniform(max(5.0, 120.0 / wm_cbf), min(6.0, 150.0 / wm_cbf))
        csf_cbf = rng.uniform(2.0, 5.0)
        csf_cbv = rng.uniform(0.2, 0.5)
        n = len(TISSUE_NAMES)
        self.cbf_by_tissue = np.zeros(n, np.float32)
        self.cbv_by_tissue = np.zeros(n, np.float32)
        self.tmax_by_tissue = np.zeros(n, np.float32)
        self.ct_by_tissue = np.zeros(n, np.float32)
        for tissue, cbf, mtt in ((GREY_MATTER, gm_cbf, gm_mtt), (DEEP_GREY, gm_cbf, gm_mtt), (WHITE_MATTER, wm_cbf, wm_mtt)):
            self.cbf_by_tissue[tissue] = cbf
            self.cbv_by_tissue[tissue] = mtt * cbf / 60.0
        self.cbf_by_tissue[CSF] = csf_cbf
        self.cbv_by_tissue[CSF] = csf_cbv
        for tissue in (CSF, GREY_MATTER, WHITE_MATTER, DEEP_GREY):
            self.tmax_by_tissue[tissue] = rng.uniform(0.5, 1.5)
        self.ct_by_tissue[:] = [-1000.0, rng.uniform(20, 45), 0.0, rng.uniform(5, 10), rng.uniform(36, 40), rng.uniform(26, 30), rng.uniform(34, 38)]
        self.skull_hu_range = (rng.uniform(700, 900), rng.uniform(1500, 1800))
        self.vessel_cbf = rng.uniform(150, 250)
        self.vessel_cbv = rng.uniform(15, 30)

    def _draw_vessels(self, rng: np.random.Generator) -> None:
        """Random tubes from the skull base outward, splatted on the 2 mm grid and smoothed."""
        grid = np.zeros(self._fine_shape, np.float32)
        axes = self.brain_axes
        for _ in range(int(rng.integers(8, 15))):
            side = rng.choice([-1.0, 1.0])
            point = np.array([side * rng.uniform(3, 25), rng.uniform(-25, 25), rng.uniform(-25, -8)])
            direction = np.array([side * rng.uniform(0.3, 1.0), rng.normal(0, 0.6), rng.uniform(0.2, 0.8)])
            direction /= np.linalg.norm(direction)
            for _ in range(int(rng.integers(50, 130))):
                idx = np.round((point - self._fine_origin) / 2.0).astype(int)
                if np.all(idx >= 0) and np.all(idx < self._fine_shape):
                    grid[tuple(idx)] += 1.0
                direction = direction + rng.normal(0, 0.18, 3)
                direction /= np.linalg.norm(direction)
                point = point + direction
                if np.sum((point / axes) ** 2) > 0.97:
                    break
        grid = ndimage.gaussian_filter(grid, 0.7)
        self._vessels = _GridField(np.clip(grid / 0.35, 0.0, 1.0), self._fine_origin, 2.0)

    def _draw_lesion(self, rng: np.random.Generator) -> None:
        self.territory = str(rng.choice(TERRITORIES, p=TERRITORY_WEIGHTS))
        region = "MCA_deep" if self.territory == "MCA" and rng.random() < 0.25 else self.territory
        self.hemisphere = "left" if rng.random() < 0.5 else "right"
        self.side = 1.0 if self.hemisphere == "right" else -1.0
        self.target_ml = float(np.clip(LESION_ML_MEDIAN * math.exp(rng.normal(0, LESION_ML_LOG_SIGMA)), *LESION_ML_RANGE))
        n_blobs = int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))
        shares = rng.dirichlet(np.full(n_blobs, 2.0)) if n_blobs > 1 else np.ones(1)
        shares = np.sort(shares)[::-1]
        box = _TERRITORY_BOXES[region]
        centres = []
        for _ in range(n_blobs):
            for _ in range(100):
                u, v, w = (rng.uniform(lo, hi) for lo, hi in box)
                if u * u + v * v + w * w < 0.8:
                    break
            centres.append(np.array([self.side * u, v, w]) * self.brain_axes)
        self._blob_centres = np.array(centres, dtype=np.float32)
        self._blob_shares = shares.astype(np.float32)
        self._blob_aspect = rng.uniform(0.7, 1.4, size=(n_blobs, 3)).astype(np.float32)
        self._blob_weight = rng.uniform(0.8, 1.0, size=n_blobs).astype(np.float32)
        self._blob_weight[0] = 1.0
        self._blob_sigma = np.ones(n_blobs, np.float32)  # set per slab extent in size_lesion()
        # The perfusion deficit is centred and sized slightly differently from the final infarct.
        self._perfusion_shift = (PERFUSION_BLOB_SHIFT * rng.normal(0, 1, size=(n_blobs, 3))).astype(np.float32)
        self._perfusion_scale = np.exp(PERFUSION_BLOB_LOG_SCALE * rng.normal(0, 1, size=n_blobs)).astype(np.float32)
        env_centre, env_axes = _TERRITORY_ENVELOPES[region]
        self._territory_centre = np.array([self.side * env_centre[0], env_centre[1], env_centre[2]]) * self.brain_axes
        self._territory_axes = np.array(env_axes) * self.brain_axes
        self.perfusion_noise = rng.uniform(0.15, 0.25, size=4)  # CBF, CBV, MTT, Tmax
        self.ct_noise_hu = rng.uniform(2.0, 4.0)
        # Where the perfusion deficit starts (relative to the fate threshold) and where the CTP core
        # starts: each case's maps over- or under-call the final infarct differently.
        self.penumbra_margin = rng.uniform(0.25, 0.7)
        self.penumbra_widening = rng.uniform(1.2, 2.0)
        self.core_offset = rng.uniform(*CORE_OFFSET_RANGE)
        self.tmax_core_extra = rng.uniform(6.0, 12.0)
        self.core_darkening_hu = rng.uniform(2.0, 5.0)
        self._lesion_rng_state = rng.integers(0, 2**63 - 1)
        self._lesion_fields: dict[str, _GridField] | None = None

    def size_lesion(self, slab_extent_mm: float) -> None:
        """Scale the lesion blobs so that their labelled volume in a slab of this extent is near the target.

        Args:
            slab_extent_mm: z coverage of the slab the volume target refers to.
        """
        volumes = self.target_ml * 1000.0 * self._blob_shares
        radius_3d = np.cbrt(3.0 * volumes / (4.0 * math.pi))
        radius_slab = np.sqrt(volumes / (math.pi * slab_extent_mm))
        radius = np.where(2 * radius_3d > slab_extent_mm, np.maximum(radius_3d, radius_slab), radius_3d)
        self._blob_sigma = (radius / 1.15).astype(np.float32)
        self._build_lesion_fields()

    def _build_lesion_fields(self) -> None:
        rng = np.random.default_rng(int(self._lesion_rng_state))
        reach = 3.5 * self._blob_sigma[:, None] * self._blob_aspect
        lo = np.min(self._blob_centres - reach, axis=0) - 6.0
        hi = np.max(self._blob_centres + reach, axis=0) + 6.0
        origin, shape = _grid(lo, hi, 2.0)
        self._lesion_fields = {
            "irregular": _GridField(_smooth_noise(rng, shape, 2.0), origin, 2.0),
            "perfusion": _GridField(_smooth_noise(rng, shape, LESION_NOISE_SIGMA_MM / 2.0), origin, 2.0),
            "fate": _GridField(_smooth_noise(rng, shape, LESION_NOISE_SIGMA_MM / 2.0), origin, 2.0),
        }

    # -- coordinates -----------------------------------------------------------------------------

    def to_head(self, scanner_points: np.ndarray) -> np.ndarray:
        """Map scanner coordinates ``(..., 3)`` (mm) to head coordinates (float32)."""
        shifted = scanner_points.astype(np.float32) - self.translation.astype(np.float32)
        return shifted @ self.rotation.astype(np.float32)

    def to_scanner(self, head_points: np.ndarray) -> np.ndarray:
        """Map head coordinates ``(..., 3)`` (mm) to scanner coordinates."""
        return np.asarray(head_points) @ self.rotation.T + self.translation

    @property
    def lesion_centre_scanner_z(self) -> float:
        """Scanner z of the largest lesion blob's centre."""
        return float(self.to_scanner(self._blob_centres[0])[2])

    def _slab_head_points(self, geometry: SlabGeometry, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Head coordinates ``(3, n_sub * V)`` of the sub-samples and ``(3, V)`` of the voxel centres.

        V is the number of voxels in the crop; sub-sample ``m`` belongs to voxel ``m % V``.
        """
        points = self.to_head(geometry.sample_points(rows, cols))
        centres = points.mean(axis=0)
        return np.ascontiguousarray(points.reshape(-1, 3).T), np.ascontiguousarray(centres.reshape(-1, 3).T)

    # -- evaluation ------------------------------------------------------------------------------

    def _classify(self, h: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tissue class per sub-sample and the skull HU (meaningful on skull points only).

        The slowly varying perturbation fields are read at the voxel centres; the shapes themselves
        are evaluated at every sub-sample.
        """
        x, y, z = h
        a, b, c = (float(v) for v in self.head_axes)
        radius2 = x * x * (1.0 / a**2) + y * y * (1.0 / b**2) + z * z * (1.0 / c**2)
        near = np.nonzero(radius2 < 1.1**2)[0]
        hn = h[:, near]
        voxel = near % centres.shape[1]
        coarse = _VoxelSampler(centres, voxel)
        radius = np.sqrt(radius2[near])
        # Distance from the outer surface along the ray from the centre: an ellipsoid "depth".
        depth_n = np.sqrt(np.sum(hn * hn, axis=0)) * (1.0 / np.maximum(radius, 1e-6) - 1.0)
        depth_n += 1.5 * coarse(self._coarse["outer"])
        scalp_end = self.scalp_mm + 0.8 * coarse(self._coarse["scalp"])
        skull_end = scalp_end + self.skull_mm + 1.2 * coarse(self._coarse["skull"])
        t = np.zeros(near.size, np.uint8)
        t[depth_n > 0] = SCALP
        in_skull = np.nonzero((depth_n > scalp_end) & (depth_n <= skull_end))[0]
        t[in_skull] = SKULL
        lo, hi = self.skull_hu_range
        skull_hu = np.zeros(h.shape[1], np.float32)
        skull_hu[near[in_skull]] = lo + (hi - lo) * _soft_step(coarse.subset(in_skull)(self._coarse["skull_hu"]), 0.6)
        brain = np.nonzero(depth_n > skull_end)[0]
        t[brain] = self._classify_brain(hn[:, brain], depth_n[brain] - skull_end[brain], coarse.subset(brain))
        tissue = np.zeros(h.shape[1], np.uint8)
        tissue[near] = t
        return tissue, skull_hu

    def _classify_brain(self, h: np.ndarray, brain_depth: np.ndarray, coarse: _VoxelSampler) -> np.ndarray:
        """Tissue class of points inside the skull, given their depth (mm) below the inner skull."""
        x, y, z = h
        s = self.brain_scale
        t = np.full(h.shape[1], WHITE_MATTER, np.uint8)
        cortical_depth = brain_depth - (self.csf_mm + 0.7 * coarse(self._coarse["csf"]))
        sulcus_depth = self.sulcus_depth_mm + 3.0 * coarse(self._coarse["sulcus_depth"])
        shallow = np.nonzero(cortical_depth < sulcus_depth + self.cortex_mm + 1.0)[0]
        dist_sulcus = np.full(h.shape[1], np.inf, np.float32)
        dist_sulcus[shallow] = np.abs(self._fold(h[:, shallow])) / self._fold_gradient
        half_width = self.sulcus_half_width_mm + 0.04 * np.maximum(sulcus_depth - cortical_depth, 0.0)
        grey = (cortical_depth < self.cortex_mm) | (
            (dist_sulcus < half_width + self.cortex_mm) & (cortical_depth < sulcus_depth + 0.7 * self.cortex_mm)
        )
        # Interhemispheric fissure, lined by the medial cortex.
        fissure_depth = np.where((z > 5 * s[2]) | (np.abs(y) > 30 * s[1]), np.float32(45.0), np.float32(12.0))
        abs_x = np.abs(x)
        grey |= (abs_x < 1.0 + self.cortex_mm) & (cortical_depth < fissure_depth + self.cortex_mm)
        t[grey] = GREY_MATTER
        deep = np.nonzero(cortical_depth > 15.0)[0]
        xd, yd, zd = x[deep], y[deep], z[deep]
        deep_wobble = 0.12 * coarse.subset(deep)(self._coarse["deep"])
        for centre, axes in self.nuclei:
            q_yz = ((yd - centre[1]) / axes[1]) ** 2 + ((zd - centre[2]) / axes[2]) ** 2
            for side in (-1.0, 1.0):
                q = ((xd - side * centre[0]) / axes[0]) ** 2 + q_yz
                t[deep[q < 1.0 + deep_wobble]] = DEEP_GREY
        csf = cortical_depth < 0
        csf |= (dist_sulcus < half_width) & (cortical_depth < sulcus_depth)
        csf |= (abs_x < 1.0) & (cortical_depth < fissure_depth)
        va, vc = self.ventricle_axes, self.ventricle_centre
        # Lateral ventricle bodies curving down into the frontal and occipital horns.
        zc = vc[2] - 0.012 * (yd - vc[1]) ** 2 / s[1]
        q_yz = ((yd - vc[1]) / va[1]) ** 2 + ((zd - zc) / va[2]) ** 2
        for side in (-1.0, 1.0):
            q = ((xd - side * vc[0]) / va[0]) ** 2 + q_yz
            csf[deep[q < 1.0 + deep_wobble]] = True
        third = (np.abs(xd) < 1.2 * s[0]) & (yd > -18 * s[1]) & (yd < 2 * s[1]) & (np.abs(zd) < 9 * s[2])
        csf[deep[third]] = True
        t[csf] = CSF
        return t

    def _lesion_fields_at(self, h: np.ndarray) -> dict[str, np.ndarray]:
        """Lesion fields at points ``(3, M)``.

        Returns ``fate_base`` (the lesion propensity L that the label sees), ``perfusion_base`` (the
        propensity that the maps see: the same blobs, displaced and rescaled a little), ``envelope``
        (where the fate and perfusion noises act) and ``hypoperfusion`` (the perfusion blobs widened
        by the penumbra factor), all confined to the territory and hemisphere.
        """
        if self._lesion_fields is None:
            raise RuntimeError("call size_lesion() before sampling the lesion")
        x, y, z = h
        tc, ta = self._territory_centre, self._territory_axes
        territory = np.sqrt(((x - tc[0]) / ta[0]) ** 2 + ((y - tc[1]) / ta[1]) ** 2 + ((z - tc[2]) / ta[2]) ** 2)
        confine = _soft_step(1.0 - territory, TERRITORY_EDGE_SOFTNESS) * _soft_step(self.side * x - 1.0, 0.8)
        fate_base = np.zeros(h.shape[1], np.float32)
        perfusion_base = np.zeros(h.shape[1], np.float32)
        hypoperfusion = np.zeros(h.shape[1], np.float32)
        envelope = np.zeros(h.shape[1], np.float32)
        widening = 1.0 / self.penumbra_widening**2
        blobs = zip(self._blob_centres, self._blob_aspect, self._blob_sigma, self._blob_weight, self._perfusion_shift, self._perfusion_scale)
        for centre, aspect, sigma, weight, shift, scale in blobs:
            r = sigma * aspect
            q = ((x - centre[0]) / r[0]) ** 2 + ((y - centre[1]) / r[1]) ** 2 + ((z - centre[2]) / r[2]) ** 2
            fate_base += weight * np.exp(-0.5 * q)
            envelope += np.exp(-0.125 * q)
            c = centre + shift * r
            r = r * scale
            q = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2
            perfusion_base += weight * np.exp(-0.5 * q)
            hypoperfusion += weight * np.exp(-0.5 * widening * q)
        envelope = confine * np.minimum(envelope, 1.0)
        active = np.nonzero(envelope > 1e-3)[0]
        irregular = np.ones(h.shape[1], np.float32)
        irregular[active] = np.clip(1.0 + LESION_IRREGULARITY * self._lesion_fields["irregular"](h[:, active]), 0.0, None)
        return {
            "fate_base": (confine * fate_base * irregular).astype(np.float32),
            "perfusion_base": (confine * perfusion_base * irregular).astype(np.float32),
            "envelope": envelope.astype(np.float32),
            "hypoperfusion": (confine * hypoperfusion).astype(np.float32),
        }

    def _head_crop(self, geometry: SlabGeometry) -> tuple[slice, slice]:
        """In-plane index ranges that hold the head (everything else is air)."""
        half = np.sqrt(np.sum((self.rotation * (self.head_axes + 7.0)[None, :]) ** 2, axis=1))
        affine = geometry.affine
        ranges = []
        for axis in (0, 1):
            lo = self.translation[axis] - half[axis]
            hi = self.translation[axis] + half[axis]
            a, b = sorted(((lo - affine[axis, 3]) / affine[axis, axis], (hi - affine[axis, 3]) / affine[axis, axis]))
            ranges.append(slice(int(np.clip(math.floor(a), 0, IN_PLANE)), int(np.clip(math.ceil(b) + 1, 0, IN_PLANE))))
        return ranges[0], ranges[1]

    def render(
        self,
        geometry: SlabGeometry,
        rng: np.random.Generator,
        target_ml: float | None = None,
        fate_threshold: float | None = None,
    ) -> RenderedSlab:
        """Sample the phantom on one slab and produce its noise-free maps, label and noisy images.

        Args:
            geometry: the slab grid (scanner coordinates).
            rng: draws the map noise of this slab.
            target_ml: labelled volume to reach in this slab; the fate threshold is set so that it
                does (as far as the lesion allows, within 1-100 mL). The lesion is sized by
                :meth:`size_lesion`, for this slab's extent when that was not called before.
            fate_threshold: use this fate threshold instead (the second slab of a patient reuses the
                first slab's threshold so that both see the same lesion).

        Returns:
            The rendered slab.

        Raises:
            ValueError: neither or both of ``target_ml`` and ``fate_threshold`` are given.
        """
        if (target_ml is None) == (fate_threshold is None):
            raise ValueError("give exactly one of target_ml and fate_threshold")
        if self._lesion_fields is None:
            self.size_lesion(geometry.extent_mm)
        rows, cols = self._head_crop(geometry)
        flat, centres = self._slab_head_points(geometry, rows, cols)
        n_sub = geometry.sub_samples
        n_voxels = centres.shape[1]
        tissue, skull_hu = self._classify(flat, centres)

        inside_idx = np.nonzero(tissue >= CSF)[0]
        voxel_in = inside_idx % n_voxels
        tissue_in = tissue[inside_idx]
        h_inside = flat[:, inside_idx]
        vessel_in = self._vessels(h_inside)
        lesion = self._lesion_fields_at(h_inside)
        active = np.nonzero(lesion["envelope"] > 1e-3)[0]
        h_act = h_inside[:, active]
        fate_base = lesion["fate_base"][active]
        # Log domain: the noises shift the lesion border by a similar fraction of its size whatever
        # the threshold, and add nothing far from the lesion.
        log_perfusion = _log(lesion["perfusion_base"][active]) + PERFUSION_DEFICIT_NOISE * self._lesion_fields["perfusion"](h_act)
        log_hypoperfusion = _log(lesion["hypoperfusion"][active])
        tissue_act = tissue_in[active]
        is_tissue = np.nonzero((tissue_act == GREY_MATTER) | (tissue_act == WHITE_MATTER) | (tissue_act == DEEP_GREY))[0]
        fate_act = np.full(active.size, -np.inf, np.float32)
        fate_act[is_tissue] = _log(fate_base[is_tissue]) + FATE_NOISE * self._lesion_fields["fate"](h_act[:, is_tissue])

        # A voxel is lesion when at least half its sub-samples are: its ceil(n/2)-th largest fate.
        act_idx = inside_idx[active]
        voxel_act = act_idx % n_voxels
        lesion_voxels = np.unique(voxel_act)
        compact = np.zeros(n_voxels, np.int64)
        compact[lesion_voxels] = np.arange(lesion_voxels.size)
        fate_by_sub = np.full((n_sub, lesion_voxels.size), -np.inf, np.float32)
        fate_by_sub[act_idx // n_voxels, compact[voxel_act]] = fate_act
        k = (n_sub + 1) // 2
        voxel_fate = np.sort(fate_by_sub, axis=0)[n_sub - k]
        if fate_threshold is None:
            fate_threshold = self._threshold_for_volume(voxel_fate, target_ml, geometry.voxel_ml)
        log_tau = math.log(fate_threshold)
        label = np.zeros(n_voxels, np.uint8)
        label[lesion_voxels[voxel_fate > log_tau]] = 1

        # Per sub-sample values inside the skull: healthy values by tissue, then vessels and the
        # lesion's deficit; voxel values are partial-volume means over the sub-samples.
        base_cbf = self.cbf_by_tissue[tissue_in]
        base_cbv = self.cbv_by_tissue[tissue_in]
        tmax_field = _VoxelSampler(centres, voxel_in)(self._coarse["tmax"])
        base_tmax = np.clip(self.tmax_by_tissue[tissue_in] + 0.35 * tmax_field, 0.0, 2.0)
        cbf = base_cbf + vessel_in * self.vessel_cbf
        cbv = base_cbv + vessel_in * self.vessel_cbv
        tmax = base_tmax.copy()
        deficit = self._deficit(log_perfusion - log_tau, log_hypoperfusion - log_tau, base_tmax[active])
        cbf[active] = base_cbf[active] * deficit["cbf"] + vessel_in[active] * self.vessel_cbf
        cbv[active] = base_cbv[active] * deficit["cbv"] + vessel_in[active] * self.vessel_cbv
        tmax[active] = deficit["tmax"]
        ct = self.ct_by_tissue[tissue]
        is_skull = tissue == SKULL
        ct[is_skull] = skull_hu[is_skull]
        darkening = self.core_darkening_hu * _ramp(fate_act - log_tau, 0.0, 0.3)

        n_inside = np.bincount(voxel_in, minlength=n_voxels)
        brain_mask = n_inside * 2 >= n_sub

        def voxel_mean(values: np.ndarray) -> np.ndarray:
            return (np.bincount(voxel_in, values, minlength=n_voxels) * (1.0 / n_sub) * brain_mask).astype(np.float32)

        def brain_mean(values: np.ndarray) -> np.ndarray:
            # Times (Tmax) are averaged over the sub-samples inside the skull only.
            total = np.bincount(voxel_in, values, minlength=n_voxels)
            return (total / np.maximum(n_inside, 1) * brain_mask).astype(np.float32)

        ct_mean = ct.reshape(n_sub, n_voxels).mean(axis=0, dtype=np.float64)
        ct_lesion = ct_mean - np.bincount(voxel_act, np.where(np.isfinite(darkening), darkening, 0.0), minlength=n_voxels) / n_sub
        maps = {
            "baseline": {"cbf": voxel_mean(base_cbf), "cbv": voxel_mean(base_cbv), "tmax": brain_mean(base_tmax),
                         "ct": ct_mean.astype(np.float32)},
            "clean": {"cbf": voxel_mean(cbf), "cbv": voxel_mean(cbv), "tmax": brain_mean(tmax),
                      "ct": ct_lesion.astype(np.float32)},
        }
        for values in maps.values():
            values["mtt"] = np.divide(60.0 * values["cbv"], values["cbf"], out=np.zeros_like(values["cbf"]), where=values["cbf"] > 0)

        n_classes = len(TISSUE_NAMES)
        voxel_of = np.tile(np.arange(n_voxels) * n_classes, n_sub)
        counts = np.bincount(voxel_of + tissue, minlength=n_voxels * n_classes).reshape(n_voxels, n_classes).T
        crop_shape = (rows.stop - rows.start, cols.stop - cols.start, geometry.n_slices)

        def embed(values: np.ndarray, fill: Any) -> np.ndarray:
            full = np.full(geometry.shape, fill, dtype=values.dtype)
            full[rows, cols] = values.reshape(crop_shape)
            return full

        air = {"cbf": 0.0, "cbv": 0.0, "mtt": 0.0, "tmax": 0.0, "ct": float(self.ct_by_tissue[AIR])}
        slab = RenderedSlab(
            geometry=geometry,
            tissue=embed(counts.argmax(axis=0).astype(np.uint8), AIR),
            purity=embed((counts.max(axis=0) / float(n_sub)).astype(np.float32), 1.0),
            brain_mask=embed(brain_mask, False),
            baseline={name: embed(values, air[name]) for name, values in maps["baseline"].items()},
            clean={name: embed(values, air[name]) for name, values in maps["clean"].items()},
            vessel=embed((np.bincount(voxel_in, vessel_in, n_voxels) / n_sub).astype(np.float32), 0.0),
            label=embed(label, np.uint8(0)),
            fate_threshold=float(fate_threshold),
        )
        slab.images = self._images(slab, (rows, cols), rng)
        return slab

    def _deficit(self, rel: np.ndarray, rel_hypoperfusion: np.ndarray, healthy_tmax: np.ndarray) -> dict[str, np.ndarray]:
        """Perfusion deficit from the perfusion level relative to the fate threshold, ``rel = ln(S / tau)``.

        ``rel_hypoperfusion`` is the same for the wider hypoperfusion drive; the penumbra extends to
        the larger of the two. Returns multiplicative CBF and CBV factors and the Tmax (s):
        oligemia below the penumbra margin, penumbra (CBF mildly reduced, CBV preserved or raised,
        Tmax > 6 s) up to the core offset, core beyond (CBF falling to a few % of healthy, CBV
        below half, Tmax > 6, often > 10 s).
        """
        pen = self.penumbra_margin
        core = self.core_offset
        drive = np.maximum(rel, rel_hypoperfusion)
        oligemia = _ramp(drive, -pen - 0.4, -pen)
        penumbra = _ramp(drive, -pen, core)
        core_depth = _ramp(rel, core, core + 0.5)
        in_core = rel > core
        tmax = healthy_tmax + oligemia * (6.2 - healthy_tmax) + _ramp(drive, -pen, core + 0.6) * self.tmax_core_extra
        cbf = np.where(in_core, 0.35 - 0.3 * core_depth, 1.0 - 0.15 * oligemia - 0.4 * penumbra)
        # CBV collapses at the core border (below 2 mL/100g in grey matter once rCBF < 30%).
        cbv = np.where(
            in_core, 1.25 - 0.87 * _ramp(rel, core, core + 0.08) - 0.18 * _ramp(rel, core + 0.08, core + 0.5), 1.0 + 0.25 * penumbra
        )
        return {"cbf": cbf.astype(np.float32), "cbv": cbv.astype(np.float32), "tmax": tmax.astype(np.float32)}

    @staticmethod
    def _threshold_for_volume(voxel_log_fate: np.ndarray, target_ml: float, voxel_ml: float) -> float:
        """The fate threshold (linear units) that labels ``target_ml`` (kept within 1-100 mL).

        The threshold stays above :data:`MIN_FATE_THRESHOLD` unless that leaves less than 1 mL.
        """
        values = np.sort(voxel_log_fate[np.isfinite(voxel_log_fate)])[::-1]
        n_min = math.ceil(LESION_ML_RANGE[0] / voxel_ml - 1e-9)
        n_max = math.floor(LESION_ML_RANGE[1] / voxel_ml + 1e-9)
        n = min(max(int(round(target_ml / voxel_ml)), n_min), n_max)
        n_above_min = int(np.count_nonzero(values > math.log(MIN_FATE_THRESHOLD)))
        if n > n_above_min:
            if n_above_min >= n_min:
                return MIN_FATE_THRESHOLD
            n = n_min
        if values.size == 0:
            return MIN_FATE_THRESHOLD
        if n >= values.size:
            return float(math.exp(values[-1]) * 0.999)
        return float(math.exp(0.5 * (float(values[n - 1]) + float(values[n]))))

    def _images(self, slab: RenderedSlab, crop: tuple[slice, slice], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Noisy images in the release dtypes (the head lies inside ``crop``; outside is air)."""
        shape = slab.geometry.shape
        rows, cols = crop
        mask = slab.brain_mask[rows, cols]
        crop_shape = mask.shape

        maps = {}
        for name, level in zip(("cbf", "cbv", "mtt", "tmax"), self.perfusion_noise):
            # Multiplicative noise, slightly correlated in-plane, independent per map.
            noise = _smooth_noise(rng, crop_shape, (0.7, 0.7, 0.0))
            maps[name] = np.clip(slab.clean[name][rows, cols] * (1.0 + level * noise), 0.0, None) * mask
        images: dict[str, np.ndarray] = {}
        for name, scale, modality in (("cbf", self.cbf_scale, "CT_CBF"), ("cbv", self.cbv_scale, "CT_CBV")):
            values = np.clip(np.rint(maps[name] * scale), 0, 65535)
            # At least 1 inside the brain so that CBF > 0 recovers the brain mask exactly.
            values = np.where(mask, np.maximum(values, 1), 0)
            full = np.zeros(shape, np.uint16)
            full[rows, cols] = values
            images[modality] = full
        for name, modality in (("mtt", "CT_MTT"), ("tmax", "CT_Tmax")):
            full = np.zeros(shape, np.float64)
            full[rows, cols] = maps[name]
            images[modality] = full
        ct = slab.clean["ct"] + self.ct_noise_hu * rng.standard_normal(shape, dtype=np.float32)
        images["CT"] = np.clip(np.rint(ct), -1024, 3071).astype(np.int32)

        # Perfusion source: CT baseline plus a gamma-variate bolus arriving 3 s + Tmax after
        # injection (peak 5 s later), scaled by CBV (about 10 HU per mL/100g).
        brain = np.flatnonzero(slab.brain_mask)
        times = PWI_FRAME_INTERVAL_S * np.arange(PWI_FRAMES, dtype=np.float32)
        arrival = 3.0 + slab.clean["tmax"].ravel()[brain]
        rel_t = np.clip((times[None, :] - arrival[:, None]) / 5.0, 0.0, None)
        bolus = rel_t**3 * np.exp(3.0 * (1.0 - rel_t))
        pwi = images["CT"].astype(np.float32)[..., None] + 3.0 * rng.standard_normal(shape + (PWI_FRAMES,), dtype=np.float32)
        pwi.reshape(-1, PWI_FRAMES)[brain] += 10.0 * slab.clean["cbv"].ravel()[brain][:, None] * bolus
        images["CT_4DPWI"] = np.clip(np.rint(pwi), -32768, 32767).astype(np.int16)
        images["OT"] = slab.label.astype(np.uint8)
        return {m: images[m] for m in MODALITIES}


def make_phantom(rng: np.random.Generator) -> Phantom:
    """Draw one random patient phantom.

    Args:
        rng: the random generator; the phantom is a deterministic function of its state.

    Returns:
        The phantom (anatomy, pose, tissue values, vessels, lesion shape, site scales).
    """
    return Phantom(rng)


# ----------------------------------------------------------------------------------------------
# Patients: slab placement
# ----------------------------------------------------------------------------------------------


def _place_slab_a(phantom: Phantom, plan: PatientPlan, rng: np.random.Generator) -> SlabGeometry:
    """Slab A through the lesion's main blob; whole-brain slabs stay roughly centred on the head."""
    extent = plan.n_slices * plan.thickness_mm
    lesion_z = phantom.lesion_centre_scanner_z
    if extent >= 80:
        margin = min(10.0, extent / 4)
        centre = phantom.translation[2] + rng.uniform(0.0, 15.0)
        centre = float(np.clip(centre, lesion_z - extent / 2 + margin, lesion_z + extent / 2 - margin))
    else:
        centre = lesion_z + rng.uniform(-0.25, 0.25) * extent
    return SlabGeometry(plan.n_slices, plan.thickness_mm, plan.spacing_mm, round(float(centre), 3))


def render_patient(plan: PatientPlan, rng: np.random.Generator) -> tuple[Phantom, list[RenderedSlab]]:
    """Draw a phantom and render its slabs (A, and B for two-slab patients).

    Slab A passes through the lesion and its fate threshold is set to reach the phantom's target
    volume; slab B is shifted along z by half to all of the slab extent (overlapping or adjacent)
    and reuses that threshold. When B would hold less than 1 mL or more than 100 mL of lesion, the
    shift is reduced (down to none: B then covers A's z range again).

    Args:
        plan: the patient's geometry and number of slabs.
        rng: the patient's random generator.

    Returns:
        The phantom and its rendered slabs, A first.
    """
    phantom = make_phantom(rng)
    slab_a = _place_slab_a(phantom, plan, rng)
    phantom.size_lesion(slab_a.extent_mm)
    rendered = [phantom.render(slab_a, rng, target_ml=phantom.target_ml)]
    if plan.n_slabs == 2:
        tau = rendered[0].fate_threshold
        shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * slab_a.extent_mm
        for factor in (1.0, 0.6, 0.3, 0.0):
            geometry_b = SlabGeometry(plan.n_slices, plan.thickness_mm, plan.spacing_mm, round(slab_a.z_centre_mm + factor * shift, 3))
            slab_b = phantom.render(geometry_b, rng, fate_threshold=tau)
            if LESION_ML_RANGE[0] <= slab_b.lesion_ml <= LESION_ML_RANGE[1]:
                break
        rendered.append(slab_b)
    return phantom, rendered


# ----------------------------------------------------------------------------------------------
# Dataset writer
# ----------------------------------------------------------------------------------------------


@dataclass
class SynthSummary:
    """What :func:`write_synthetic_dataset` wrote.

    Attributes:
        root: the dataset folder.
        files: every file written, in order.
        table_csv: ``synth_cases.csv``, the per-case table.
        ground_truth_csv: ``TESTING_GROUND_TRUTH/cases.csv`` (``None`` without test cases).
        cases: the per-case table as a list of dicts (split, case_id, patient_id, slab, n_slices,
            thickness_mm, spacing_mm, lesion_ml, territory, hemisphere, cbf_scale, cbv_scale,
            smir_<MOD> ids, threshold_dice).
    """

    root: Path
    files: list[Path]
    table_csv: Path
    ground_truth_csv: Path | None
    cases: list[dict[str, Any]]

    def mean_threshold_dice(self, split: str | None = "training") -> float:
        """Mean Dice of the clinical threshold rule over the cases of ``split`` (all when ``None``)."""
        values = [c["threshold_dice"] for c in self.cases if split is None or c["split"] == split]
        return float(np.mean(values)) if values else float("nan")


_OWNED = ("TRAINING", "TESTING", "TESTING_GROUND_TRUTH", "synth_cases.csv")
_TABLE_COLUMNS = (
    "split", "case_id", "patient_id", "slab", "n_slices", "thickness_mm", "spacing_mm", "lesion_ml",
    "territory", "hemisphere", "cbf_scale", "cbv_scale",
    *(f"smir_{m}" for m in MODALITIES), "threshold_dice",
)


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    if data.ndim == 4:
        image.header.set_zooms(tuple(image.header.get_zooms()[:3]) + (PWI_FRAME_INTERVAL_S,))
    return image


def _csv_text(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buffer.getvalue()


def write_synthetic_dataset(
    out: str | Path,
    cases: int,
    test_cases: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a synthetic dataset in the ISLES 2018 layout.

    Layout: ``OUT/TRAINING/case_N/SMIR.Brain.XX.O.<MOD>.<id>/SMIR.Brain.XX.O.<MOD>.<id>.nii`` for
    MOD in CT, CT_4DPWI, CT_CBF, CT_CBV, CT_MTT, CT_Tmax, OT (the OT folder also holds a JSON whose
    ``description`` is ``Train_<patient>_<slab>``); ``OUT/TESTING/case_N/...`` without OT; the test
    labels in ``OUT/TESTING_GROUND_TRUTH/case_N/SMIR.Brain.XX.O.OT.<id>/`` with ``cases.csv``
    (case_id, ot_id, mtt_id, patient_id); ``OUT/synth_cases.csv``, the per-case table. SMIR ids are
    6-digit, unique over the dataset. The same seed writes byte-identical files.

    Args:
        out: the dataset folder (created when missing).
        cases: number of training slabs (cases), >= 1.
        test_cases: number of test slabs; default ``max(1, cases // 3)``.
        seed: random seed.
        overwrite: when the folder already holds TRAINING/, TESTING/ or TESTING_GROUND_TRUTH/,
            remove those and synth_cases.csv first instead of refusing.

    Returns:
        A :class:`SynthSummary` of the files and cases written.

    Raises:
        ValueError: ``cases`` < 1 or ``test_cases`` < 0, or the folder already holds a dataset and
            ``overwrite`` is false.
    """
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    if test_cases is None:
        test_cases = max(1, cases // 3)
    if test_cases < 0:
        raise ValueError(f"test_cases must be >= 0, got {test_cases}")
    root = Path(out)
    existing = [name for name in ("TRAINING", "TESTING", "TESTING_GROUND_TRUTH") if (root / name).exists()]
    if existing and not overwrite:
        raise ValueError(
            f"{root} already contains {', '.join(n + '/' for n in existing)}; "
            "choose an empty folder or pass overwrite=True (--overwrite) to replace the synthetic dataset"
        )
    if overwrite:
        for name in _OWNED:
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    root.mkdir(parents=True, exist_ok=True)

    splits = (("training", "TRAINING", "Train", cases), ("testing", "TESTING", "Test", test_cases))
    plans = {
        split: plan_patients(n, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i))))
        for i, (split, _, _, n) in enumerate(splits)
    }
    n_folders = cases * len(MODALITIES) + test_cases * len(MODALITIES)
    id_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    next_id = int(id_rng.integers(100000, max(100001, 999999 - n_folders)))

    files: list[Path] = []
    table: list[dict[str, Any]] = []
    truth_rows: list[dict[str, Any]] = []
    for split_index, (split, folder, prefix, _) in enumerate(splits):
        case_number = 0
        for patient_number, plan in enumerate(plans[split], start=1):
            patient_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2 + split_index, patient_number)))
            phantom, slabs = render_patient(plan, patient_rng)
            for slab_letter, slab in zip("AB", slabs):
                case_number += 1
                case_id = f"case_{case_number}"
                patient_id = f"{prefix}_{patient_number}"
                affine = slab.geometry.affine
                ids: dict[str, int] = {}
                for modality in MODALITIES:
                    ids[modality] = next_id
                    next_id += 1
                    name = f"SMIR.Brain.XX.O.{modality}.{ids[modality]}"
                    case_dir = root / (folder if modality != "OT" or split == "training" else "TESTING_GROUND_TRUTH") / case_id
                    path = case_dir / name / f"{name}.nii"
                    image = slab.images[modality]
                    files.append(save_nifti_atomic(_nifti(image, affine), path))
                    if modality == "OT":
                        description = f"{prefix}_{patient_number}_{slab_letter}"
                        files.append(
                            atomic_write_json(
                                path.with_suffix(".json"),
                                {"description": description, "patient_id": patient_id, "slab": slab_letter,
                                 "case_id": case_id, "source": "synthetic phantom"},
                            )
                        )
                prediction = threshold_rule(slab.images["CT_CBF"], slab.images["CT_Tmax"])
                table.append(
                    {
                        "split": split,
                        "case_id": case_id,
                        "patient_id": patient_id,
                        "slab": slab_letter,
                        "n_slices": slab.geometry.n_slices,
                        "thickness_mm": slab.geometry.thickness_mm,
                        "spacing_mm": slab.geometry.spacing_mm,
                        "lesion_ml": round(slab.lesion_ml, 3),
                        "territory": phantom.territory,
                        "hemisphere": phantom.hemisphere,
                        "cbf_scale": phantom.cbf_scale,
                        "cbv_scale": phantom.cbv_scale,
                        **{f"smir_{m}": ids[m] for m in MODALITIES},
                        "threshold_dice": round(dice_score(prediction, slab.label), 4),
                    }
                )
                if split == "testing":
                    truth_rows.append({"case_id": case_id, "ot_id": ids["OT"], "mtt_id": ids["CT_MTT"], "patient_id": patient_id})

    ground_truth_csv = None
    if test_cases:
        ground_truth_csv = atomic_write_text(
            root / "TESTING_GROUND_TRUTH" / "cases.csv", _csv_text(truth_rows, ("case_id", "ot_id", "mtt_id", "patient_id"))
        )
        files.append(ground_truth_csv)
    table_csv = atomic_write_text(root / "synth_cases.csv", _csv_text(table, _TABLE_COLUMNS))
    files.append(table_csv)
    return SynthSummary(root=root, files=files, table_csv=table_csv, ground_truth_csv=ground_truth_csv, cases=table)
