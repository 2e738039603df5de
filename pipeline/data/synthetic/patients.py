"""Patients: where a patient's slabs are placed along z, and rendering all slabs of one patient.

Slab A passes through the lesion; the second slab of a two-slab patient (B) is shifted along z and
sees the same head and lesion, since both are sampled from the one phantom. The realistic phantom
then gives the patient a site and turns each slab's CTP-time label into its DWI label
(:mod:`.acquisition`).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.data.synthetic.acquisition import (
    HYPOPERFUSION_WIDENING_FACTOR,
    MECHANISMS,
    TMAX_CORE_EXTRA_FACTOR,
    AcquisitionSettings,
    PatientAcquisition,
    apply_label_mechanisms,
    draw_acquisition,
    draw_slab_misregistration,
)
from pipeline.data.synthetic.geometry import PatientPlan, SlabGeometry
from pipeline.data.synthetic.lesion import LESION_ML_RANGE
from pipeline.data.synthetic.phantom import Phantom, RenderedSlab, make_phantom

__all__ = ["render_patient"]


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


def _child_rng(seed: np.random.SeedSequence, *key: int) -> np.random.Generator:
    """A generator for one purpose (``key``) below the patient's acquisition seed."""
    return np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=tuple(seed.spawn_key) + key))


def render_patient(
    plan: PatientPlan,
    rng: np.random.Generator,
    acquisition: AcquisitionSettings | None = None,
    acquisition_seed: np.random.SeedSequence | None = None,
) -> tuple[Phantom, list[RenderedSlab]]:
    """Draw a phantom and render its slabs (A, and B for two-slab patients).

    Slab A passes through the lesion and its fate threshold is set to reach the phantom's target
    volume; slab B is shifted along z by half to all of the slab extent (overlapping or adjacent)
    and reuses that threshold. When B would hold less than 1 mL or more than 100 mL of lesion, the
    shift is reduced (down to none: B then covers A's z range again).

    With ``acquisition`` (the realistic phantom), the patient's site (units, noise, smoothing of
    the maps) replaces the classic site before rendering, the CTP-time lesion target is the drawn
    target divided by ``(1 + growth_fraction) * keep_fraction``, the hypoperfused region is
    widened and the core's Tmax lowered (the ``mismatch`` mechanism), and each slab's label (and ``OT`` image)
    is replaced by its DWI label (:func:`~pipeline.data.synthetic.acquisition.apply_label_mechanisms`);
    the drawn parameters are in ``phantom.acquisition``. These draws come from generators below
    ``acquisition_seed``, one per mechanism, never from ``rng``: the CTP phantom is the classic one.

    Args:
        plan: the patient's geometry and number of slabs.
        rng: the patient's random generator.
        acquisition: the label-vs-map mechanisms to apply; ``None``: the classic phantom
            (``phantom.acquisition`` is ``None``).
        acquisition_seed: the seed of those mechanisms' generators (required with ``acquisition``).

    Returns:
        The phantom and its rendered slabs, A first.

    Raises:
        ValueError: ``acquisition`` is given without ``acquisition_seed``.
    """
    if acquisition is not None and acquisition_seed is None:
        raise ValueError("render_patient: acquisition needs an acquisition_seed")
    phantom = make_phantom(rng)
    patient: PatientAcquisition | None = None
    if acquisition is not None:
        rngs = {name: _child_rng(acquisition_seed, k) for k, name in enumerate(MECHANISMS)}
        patient = draw_acquisition(acquisition, rngs)
        if patient.site is not None:
            phantom.cbf_scale, phantom.cbv_scale = patient.site.cbf_scale, patient.site.cbv_scale
            phantom.perfusion_noise = phantom.perfusion_noise * patient.site.noise_factor
            phantom.map_smoothing_mm = patient.site.smoothing_mm
            phantom.cbf_contrast = patient.site.cbf_contrast
            phantom.tmax_scale = patient.site.tmax_scale
        if acquisition.mismatch:
            phantom.penumbra_widening = phantom.penumbra_widening * HYPOPERFUSION_WIDENING_FACTOR
            phantom.tmax_core_extra = phantom.tmax_core_extra * TMAX_CORE_EXTRA_FACTOR
        # The infarct grows (or, reperfused, shrinks) after the CTP: its CTP-time volume is the drawn
        # (DWI) target divided by that change.
        change = (1.0 + patient.growth_fraction) * patient.keep_fraction
        phantom.target_ml = min(LESION_ML_RANGE[1], max(LESION_ML_RANGE[0], phantom.target_ml / change))
    phantom.acquisition = patient
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
    if patient is not None:
        misregistration = _child_rng(acquisition_seed, len(MECHANISMS))
        for index, slab in enumerate(rendered):
            patient.slabs.append(draw_slab_misregistration(acquisition, misregistration))
            geometry = slab.geometry
            spacing = (geometry.spacing_mm, geometry.spacing_mm, geometry.thickness_mm)
            slab_rngs = {name: _child_rng(acquisition_seed, k, 1 + index) for k, name in enumerate(MECHANISMS)}
            max_voxels = int(0.95 * LESION_ML_RANGE[1] / geometry.voxel_ml)
            volume = (math.ceil(LESION_ML_RANGE[0] / geometry.voxel_ml - 1e-9), math.floor(LESION_ML_RANGE[1] / geometry.voxel_ml + 1e-9))
            healthy = slab.baseline["cbf"]
            rcbf = np.divide(slab.clean["cbf"], healthy, out=np.ones_like(healthy), where=healthy > 0)
            slab.label = apply_label_mechanisms(
                slab.label, slab.clean["tmax"], rcbf, slab.brain_mask, spacing, patient, index, slab_rngs, max_voxels, volume
            )
            slab.images["OT"] = slab.label.astype(np.uint8)
    return phantom, rendered
