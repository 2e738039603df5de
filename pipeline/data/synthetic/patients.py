"""Patients: where a patient's slabs are placed along z, and rendering all slabs of one patient.

Slab A passes through the lesion; the second slab of a two-slab patient (B) is shifted along z and
sees the same head and lesion, since both are sampled from the one phantom.
"""

from __future__ import annotations

import numpy as np

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
