"""The phantom's head: tissue classes, pose, anatomy, healthy tissue values, vessels and tissue classification.

The head is a set of analytic shapes (ellipsoidal scalp and skull, CSF, a cortex folded by a smooth
random field, white matter, deep grey nuclei, lateral and third ventricles) perturbed by coarse
smooth random fields, plus a few bright vessels; all live in head coordinates (mm) and the pose maps
them into scanner coordinates. :class:`AnatomyMixin` holds the drawing and evaluation of these
shapes for :class:`~pipeline.data.synthetic.phantom.Phantom`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from pipeline.data.synthetic.fields import GridField, VoxelSampler, box_grid, rotation_matrix, smooth_noise, soft_step
from pipeline.data.synthetic.geometry import IN_PLANE, SlabGeometry

__all__ = [
    "AIR",
    "BRAIN_TISSUES",
    "CSF",
    "DEEP_GREY",
    "GREY_MATTER",
    "SCALP",
    "SKULL",
    "TISSUE_NAMES",
    "WHITE_MATTER",
    "AnatomyMixin",
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


class AnatomyMixin:
    """Head anatomy of a :class:`~pipeline.data.synthetic.phantom.Phantom`: pose, shapes, tissue values, vessels.

    Not used on its own: the phantom calls ``_draw_pose``, ``_draw_anatomy``, ``_draw_tissue_values``
    and ``_draw_vessels`` in that order with its random generator, which sets the pose
    (``rotation``, ``translation``), the shapes (``head_axes``, ``brain_axes``, ``brain_scale``,
    layer thicknesses, ventricles, ``nuclei`` and the smooth perturbation fields), the healthy
    values per tissue class (``cbf_by_tissue``, ``cbv_by_tissue``, ``tmax_by_tissue``,
    ``ct_by_tissue``, ``skull_hu_range``, ``vessel_cbf``, ``vessel_cbv``) and the vessel field. The
    other methods map coordinates, crop a slab to the head and classify sample points into tissues.
    """

    # -- drawing ---------------------------------------------------------------------------------

    def _draw_pose(self, rng: np.random.Generator) -> None:
        self.rotation = rotation_matrix(
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
        self._coarse_origin, coarse_shape = box_grid(lo, -lo, 4.0)
        names = ("outer", "scalp", "skull", "skull_hu", "csf", "sulcus_depth", "deep", "tmax")
        self._coarse = {n: GridField(smooth_noise(rng, coarse_shape, 1.8), self._coarse_origin, 4.0) for n in names}

        blo = -inner - 4.0
        self._fine_origin, fine_shape = box_grid(blo, -blo, 2.0)
        self._fine_shape = fine_shape
        fold = smooth_noise(rng, fine_shape, 1.5)
        self._fold = GridField(fold, self._fine_origin, 2.0)
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
        self._vessels = GridField(np.clip(grid / 0.35, 0.0, 1.0), self._fine_origin, 2.0)

    # -- coordinates -----------------------------------------------------------------------------

    def to_head(self, scanner_points: np.ndarray) -> np.ndarray:
        """Map scanner coordinates ``(..., 3)`` (mm) to head coordinates (float32)."""
        shifted = scanner_points.astype(np.float32) - self.translation.astype(np.float32)
        return shifted @ self.rotation.astype(np.float32)

    def to_scanner(self, head_points: np.ndarray) -> np.ndarray:
        """Map head coordinates ``(..., 3)`` (mm) to scanner coordinates."""
        return np.asarray(head_points) @ self.rotation.T + self.translation

    def _slab_head_points(self, geometry: SlabGeometry, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Head coordinates ``(3, n_sub * V)`` of the sub-samples and ``(3, V)`` of the voxel centres.

        V is the number of voxels in the crop; sub-sample ``m`` belongs to voxel ``m % V``.
        """
        points = self.to_head(geometry.sample_points(rows, cols))
        centres = points.mean(axis=0)
        return np.ascontiguousarray(points.reshape(-1, 3).T), np.ascontiguousarray(centres.reshape(-1, 3).T)

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
        coarse = VoxelSampler(centres, voxel)
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
        skull_hu[near[in_skull]] = lo + (hi - lo) * soft_step(coarse.subset(in_skull)(self._coarse["skull_hu"]), 0.6)
        brain = np.nonzero(depth_n > skull_end)[0]
        t[brain] = self._classify_brain(hn[:, brain], depth_n[brain] - skull_end[brain], coarse.subset(brain))
        tissue = np.zeros(h.shape[1], np.uint8)
        tissue[near] = t
        return tissue, skull_hu

    def _classify_brain(self, h: np.ndarray, brain_depth: np.ndarray, coarse: VoxelSampler) -> np.ndarray:
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
