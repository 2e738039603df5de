"""The phantom: one random patient (:class:`Phantom`, :func:`make_phantom`) and one rendered slab of it.

A :class:`Phantom` combines the head anatomy (:mod:`.anatomy`), the ischemic lesion (:mod:`.lesion`)
and the image synthesis (:mod:`.imaging`); :meth:`Phantom.render` samples all three at the physical
sub-sample points of one slab, averages them into partial-volume voxels and returns a
:class:`RenderedSlab`: tissue map, noise-free maps, label and the images as written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.data.synthetic.anatomy import (
    AIR,
    CSF,
    DEEP_GREY,
    GREY_MATTER,
    SKULL,
    TISSUE_NAMES,
    WHITE_MATTER,
    AnatomyMixin,
)
from pipeline.data.synthetic.fields import VoxelSampler, ramp, safe_log
from pipeline.data.synthetic.geometry import SlabGeometry
from pipeline.data.synthetic.imaging import SITE_SCALES, ImagingMixin
from pipeline.data.synthetic.lesion import FATE_NOISE, PERFUSION_DEFICIT_NOISE, LesionMixin

__all__ = ["Phantom", "RenderedSlab", "make_phantom"]


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


class Phantom(AnatomyMixin, LesionMixin, ImagingMixin):
    """One random patient: head anatomy, pose, tissue values, vessels and an ischemic lesion.

    Build it with :func:`make_phantom`. All shapes live in head coordinates (mm, origin at the
    head's centre, x left-right, y posterior-anterior, z inferior-superior); the pose maps them into
    scanner coordinates. The anatomy, lesion and image synthesis are drawn and evaluated by the
    mixins of :mod:`.anatomy`, :mod:`.lesion` and :mod:`.imaging`; this class draws them in a fixed
    order from one generator and renders slabs.

    Args:
        rng: the random generator; the phantom is a deterministic function of its state.
    """

    def __init__(self, rng: np.random.Generator):
        self._draw_pose(rng)
        self._draw_anatomy(rng)
        self._draw_tissue_values(rng)
        self._draw_vessels(rng)
        self._draw_lesion(rng)
        site = int(rng.integers(len(SITE_SCALES)))
        self.cbf_scale, self.cbv_scale = SITE_SCALES[site]
        # The realistic phantom's drawn acquisition (site, growth, misregistration, border noise), set
        # by render_patient; None for the classic phantom.
        self.acquisition = None

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
        log_perfusion = safe_log(lesion["perfusion_base"][active]) + PERFUSION_DEFICIT_NOISE * self._lesion_fields["perfusion"](h_act)
        log_hypoperfusion = safe_log(lesion["hypoperfusion"][active])
        tissue_act = tissue_in[active]
        is_tissue = np.nonzero((tissue_act == GREY_MATTER) | (tissue_act == WHITE_MATTER) | (tissue_act == DEEP_GREY))[0]
        fate_act = np.full(active.size, -np.inf, np.float32)
        fate_act[is_tissue] = safe_log(fate_base[is_tissue]) + FATE_NOISE * self._lesion_fields["fate"](h_act[:, is_tissue])

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
        tmax_field = VoxelSampler(centres, voxel_in)(self._coarse["tmax"])
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
        darkening = self.core_darkening_hu * ramp(fate_act - log_tau, 0.0, 0.3)

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


def make_phantom(rng: np.random.Generator) -> Phantom:
    """Draw one random patient phantom.

    Args:
        rng: the random generator; the phantom is a deterministic function of its state.

    Returns:
        The phantom (anatomy, pose, tissue values, vessels, lesion shape, site scales).
    """
    return Phantom(rng)
