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
the label, so that the clinical threshold rule is an imperfect predictor, as on the real data.
The realistic phantom (``phantom="realistic"``, the default; ``"classic"`` writes the earlier one) labels
what a later DWI shows, not what the CTP maps show: the infarct grows into part of the penumbra (or,
reperfused, shrinks), the label is misregistered to the slab, a rater's border noise moves its
boundary, the hypoperfused region is several times the core, and each patient's site has its own
map units, noise, deconvolution and smoothing (:mod:`.acquisition`).
Files follow the ISLES 2018 release layout, names and dtypes.

Modules:

- :mod:`.geometry`: :class:`SlabGeometry` (the voxel grid of one slab), :class:`PatientPlan` and
  :func:`plan_patients` (slab geometries and one or two slabs per patient).
- :mod:`.fields`: smooth random fields on grids in head coordinates and small numeric helpers.
- :mod:`.anatomy`: tissue classes; the head's pose, shapes, healthy tissue values and vessels.
- :mod:`.lesion`: the lesion's territory, propensity, fate threshold and perfusion deficit.
- :mod:`.imaging`: the ISLES 2018 modalities and dtypes, site scales, the noisy images of a slab.
- :mod:`.phantom`: :class:`Phantom` (anatomy, lesion and imaging of one patient),
  :func:`make_phantom`, and :class:`RenderedSlab`, one slab sampled from it.
- :mod:`.acquisition`: the realistic phantom's label-vs-map mechanisms (:func:`grow_infarct`,
  :func:`misregister_label`, :func:`jitter_border`, the :data:`SITES`) and their settings.
- :mod:`.patients`: :func:`render_patient`, slab placement along z and rendering of a patient's slabs.
- :mod:`.writer`: :func:`write_synthetic_dataset`, the ISLES 2018 files, :class:`SynthSummary`,
  and the dataset's on-disk names.
"""

from __future__ import annotations

from pipeline.data.synthetic.acquisition import (
    DEFAULT_PHANTOM,
    MECHANISMS,
    PHANTOMS,
    SITES,
    AcquisitionSettings,
    grow_infarct,
    jitter_border,
    misregister_label,
)
from pipeline.data.synthetic.anatomy import (
    AIR,
    BRAIN_TISSUES,
    CSF,
    DEEP_GREY,
    GREY_MATTER,
    SCALP,
    SKULL,
    TISSUE_NAMES,
    WHITE_MATTER,
)
from pipeline.data.synthetic.geometry import (
    IN_PLANE,
    IN_PLANE_SPACING_MM,
    MAX_TWO_SLAB_EXTENT_MM,
    SLAB_HISTOGRAM,
    TWO_SLAB_PROBABILITY,
    PatientPlan,
    SlabGeometry,
    plan_patients,
)
from pipeline.data.synthetic.imaging import MODALITIES, MODALITY_DTYPES, PWI_FRAME_INTERVAL_S, PWI_FRAMES, SITE_SCALES
from pipeline.data.synthetic.lesion import (
    CORE_OFFSET_RANGE,
    FATE_NOISE,
    LESION_IRREGULARITY,
    LESION_ML_LOG_SIGMA,
    LESION_ML_MEDIAN,
    LESION_ML_RANGE,
    LESION_NOISE_SIGMA_MM,
    MIN_FATE_THRESHOLD,
    PERFUSION_BLOB_LOG_SCALE,
    PERFUSION_BLOB_SHIFT,
    PERFUSION_DEFICIT_NOISE,
    TERRITORIES,
    TERRITORY_EDGE_SOFTNESS,
    TERRITORY_WEIGHTS,
)
from pipeline.data.synthetic.patients import render_patient
from pipeline.data.synthetic.phantom import Phantom, RenderedSlab, make_phantom
from pipeline.data.synthetic.writer import SynthSummary, write_synthetic_dataset

__all__ = [
    "AIR",
    "DEFAULT_PHANTOM",
    "MECHANISMS",
    "PHANTOMS",
    "SITES",
    "AcquisitionSettings",
    "grow_infarct",
    "jitter_border",
    "misregister_label",
    "BRAIN_TISSUES",
    "CORE_OFFSET_RANGE",
    "CSF",
    "DEEP_GREY",
    "FATE_NOISE",
    "GREY_MATTER",
    "IN_PLANE",
    "IN_PLANE_SPACING_MM",
    "LESION_IRREGULARITY",
    "LESION_ML_LOG_SIGMA",
    "LESION_ML_MEDIAN",
    "LESION_ML_RANGE",
    "LESION_NOISE_SIGMA_MM",
    "MAX_TWO_SLAB_EXTENT_MM",
    "MIN_FATE_THRESHOLD",
    "MODALITIES",
    "MODALITY_DTYPES",
    "PERFUSION_BLOB_LOG_SCALE",
    "PERFUSION_BLOB_SHIFT",
    "PERFUSION_DEFICIT_NOISE",
    "PWI_FRAMES",
    "PWI_FRAME_INTERVAL_S",
    "SCALP",
    "SITE_SCALES",
    "SKULL",
    "SLAB_HISTOGRAM",
    "TERRITORIES",
    "TERRITORY_EDGE_SOFTNESS",
    "TERRITORY_WEIGHTS",
    "TISSUE_NAMES",
    "TWO_SLAB_PROBABILITY",
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
